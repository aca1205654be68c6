"""The DynamoDB flush keeps its promise when cut short: nothing it drained is forgotten."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka import TopicPartition

from adapters.dynamo_store import InMemoryStatusStore, PutOutcome
from adapters.snapshot_store import InMemorySnapshotStore
from schemas.views import StudentView
from services.status.service import StatusService
from services.status.settings import Settings


class StuckStore(InMemoryStatusStore):
    """Accepts the call, then never answers (a DynamoDB that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.called = asyncio.Event()

    async def put_first_attempt(self, views: Sequence[StudentView]) -> list[PutOutcome]:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def view(student: str, seq: int) -> StudentView:
    return StudentView(exam="e", attempt=f"a-{student}", student=student, seq=seq)


async def test_cancelled_flush_puts_views_and_offsets_back() -> None:
    store = StuckStore()
    service = StatusService(Settings(), dynamo=store, snapshots=InMemorySnapshotStore())
    service._stage(view("s1", 4))  # noqa: SLF001 - white-box: the flush's own bookkeeping
    service._uncommitted = {TopicPartition("t", 0): 5}  # noqa: SLF001
    flush = asyncio.create_task(service.flush())
    await asyncio.wait_for(store.called.wait(), 5)
    # Meanwhile the next batch staged a newer offset of the same partition.
    service._uncommitted[TopicPartition("t", 0)] = 9  # noqa: SLF001
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    assert service._buffer.drain() == [view("s1", 4)]  # noqa: SLF001
    assert service._uncommitted == {TopicPartition("t", 0): 9}  # noqa: SLF001


async def test_failed_writes_are_retried_until_they_land() -> None:
    store = InMemoryStatusStore()
    store.unavailable = True
    settings = Settings()
    settings.status.retry_initial_s = 0.01
    settings.status.retry_max_s = 0.02
    service = StatusService(settings, dynamo=store, snapshots=InMemorySnapshotStore())
    service._stage(view("s1", 4))  # noqa: SLF001
    flush = asyncio.create_task(service.flush())
    await asyncio.sleep(0.1)
    assert not flush.done()
    assert not service._healthy["dynamo"]  # noqa: SLF001
    store.unavailable = False
    await asyncio.wait_for(flush, 5)
    assert await store.get("e", "s1") == view("s1", 4)
    assert service._healthy["dynamo"]  # noqa: SLF001
