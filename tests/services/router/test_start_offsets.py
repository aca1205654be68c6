"""Taking partitions right after a broker stall: the coordinator is not there yet, for a while."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from services.router.service import RouterService
from services.router.settings import RouterOptions, RouterSettings


class StallingAdmin:
    """Answers ``failures`` times with ``error``, then the committed offsets."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def list_consumer_group_offsets(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return {tp: OffsetAndMetadata(40, "") for tp in partitions}


class Earliest:
    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 10 for tp in tps}


class Presence:
    consumer = Earliest()


async def router(admin: StallingAdmin, patience_s: float) -> RouterService:
    settings = RouterSettings(router=RouterOptions(start_offsets_patience_s=patience_s))
    service: Any = RouterService(settings)
    await service._presence.consumer.stop()  # never started: only its offsets are faked
    service._presence = Presence()
    service._admin = admin
    routing: RouterService = service
    return routing


def retries(service: RouterService) -> float:
    value: float = service.metrics.start_offsets_retries._value.get()
    return value


async def test_a_coordinator_not_yet_available_is_asked_again_until_it_answers() -> None:
    admin = StallingAdmin(3, GroupCoordinatorNotAvailableError("loading"))
    service = await router(admin, patience_s=30)
    assert await service._start_offsets([0, 1]) == {0: 40, 1: 40}  # noqa: SLF001
    assert admin.calls == 4
    assert retries(service) == 3
    assert service.failure is None


async def test_a_coordinator_that_never_comes_back_fails_after_the_patience() -> None:
    admin = StallingAdmin(1_000, GroupCoordinatorNotAvailableError("gone"))
    service = await router(admin, patience_s=0.5)
    with pytest.raises(GroupCoordinatorNotAvailableError):
        await service._start_offsets([0])  # noqa: SLF001
    assert 2 <= admin.calls <= 6  # 0.1, 0.2 s of backoff fit in the patience, 0.4 more not


async def test_an_error_that_asking_again_cannot_fix_fails_at_once() -> None:
    admin = StallingAdmin(1, GroupAuthorizationFailedError("no"))
    service = await router(admin, patience_s=30)
    with pytest.raises(GroupAuthorizationFailedError):
        await service._start_offsets([0])  # noqa: SLF001
    assert admin.calls == 1
    assert retries(service) == 0
