"""The plain engine's rebalance bookkeeping, without a broker (the integration tests in
test_router.py run the whole router on both engines against the real Kafka)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from services.router.plain_log import PlainLogEngine, RoutedBatch, _Listener
from services.router.settings import RouterOptions, RouterSettings

TOPIC = "log"


class Routing:
    def __init__(self, *, assign_fails: bool = False) -> None:
        self.revoked: list[list[int]] = []
        self.failures: list[BaseException] = []
        self._assign_fails = assign_fails

    async def route_records(self, records: Sequence[Any], keep: Callable[[int], bool]) -> RoutedBatch:
        raise AssertionError("not routed in these tests")

    async def await_deliveries(self, pending: list[Awaitable[Any]]) -> None:
        pass

    async def partitions_assigned(self, partitions: list[int]) -> None:
        if self._assign_fails:
            raise RuntimeError("WatchReady did not land")

    async def partitions_revoked(self, partitions: list[int]) -> None:
        self.revoked.append(partitions)

    def batch_landed(self, batch: RoutedBatch) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        self.failures.append(exc)


def engine(routing: Routing) -> PlainLogEngine:
    settings = RouterSettings(router=RouterOptions(ops_port=0))
    settings.kafka.events_topic = TOPIC
    return PlainLogEngine(settings, routing)


async def test_records_fetched_before_a_revocation_are_dropped_later_ones_kept() -> None:
    routing = Routing()
    plain = engine(routing)
    fetched_before = plain._revocations  # noqa: SLF001 - white-box: the engine's bookkeeping
    await _Listener(plain).on_partitions_revoked({TopicPartition(TOPIC, 3)})
    fetched_after = plain._revocations  # noqa: SLF001
    assert routing.revoked == [[3]]
    assert not plain._still_ours(3, fetched_before)  # noqa: SLF001
    assert plain._still_ours(4, fetched_before)  # noqa: SLF001 - not revoked
    # aiokafka hands out records of a new assignment before on_partitions_assigned runs:
    # those were fetched after the revocation and are routed.
    assert plain._still_ours(3, fetched_after)  # noqa: SLF001
    await plain.stop()


async def test_a_failing_assignment_stops_the_router_instead_of_being_logged_away() -> None:
    routing = Routing(assign_fails=True)
    plain = engine(routing)
    with pytest.raises(RuntimeError):
        await _Listener(plain).on_partitions_assigned({TopicPartition(TOPIC, 1)})
    assert [str(exc) for exc in routing.failures] == ["WatchReady did not land"]
    await plain.stop()
