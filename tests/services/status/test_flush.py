"""The DynamoDB flush keeps its promise when cut short: nothing it drained is forgotten."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

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


async def test_cancelled_flush_puts_views_back_and_keeps_holding_the_commit() -> None:
    store = StuckStore()
    service = StatusService(Settings(), dynamo=store, snapshots=InMemorySnapshotStore())
    service._stage(view("s1", 4), (0, 4))  # noqa: SLF001 - white-box: the flush's bookkeeping
    flush = asyncio.create_task(service.flush())
    await asyncio.wait_for(store.called.wait(), 5)
    assert service.commit_floor() == {0: 4}, "in flight: still held"
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    assert service.commit_floor() == {0: 4}
    assert service._buffer.drain() == [view("s1", 4)]  # noqa: SLF001


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
