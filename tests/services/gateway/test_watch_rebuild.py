"""A proctor who subscribes while the status service rebuilds a lost Redis snapshot gets a
retryable ``snapshot_timeout`` (with ``retry_after_ms``), never the partial snapshot; once the
rebuild is done the same subscribe gets the whole exam. The snapshot-reading side of the
gateway (``Watches``) on an in-memory snapshot store, with the router's reply faked."""

from __future__ import annotations

import asyncio
from typing import cast

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from adapters.snapshot_store import InMemorySnapshotStore
from schemas.deliveries import WatchReady
from schemas.frames import ErrorFrame, SnapshotFrame
from schemas.presence import ExamWatch
from schemas.views import AttemptState, StudentView
from services.gateway.connections import Connection, Hub
from services.gateway.metrics import GatewayMetrics
from services.gateway.publisher import Publisher
from services.gateway.settings import GatewayOptions, GatewaySettings
from services.gateway.watches import REBUILD_RETRY_AFTER_MS, Watches


class Proctor:
    """What ``Watches`` uses of a connection."""

    def __init__(self) -> None:
        self.watching: set[str] = set()
        self.frames: list[BaseModel] = []

    def send(self, frame: BaseModel) -> None:
        self.frames.append(frame)

    def send_row(self, row: StudentView) -> None:
        self.frames.append(row)

    def forget_exam(self, exam: str) -> None:
        pass


class Presence:
    """The publisher's presence write; the test answers for the router."""

    def __init__(self) -> None:
        self.watches: list[BaseModel | None] = []

    async def presence(self, key: bytes, record: BaseModel | None) -> None:
        self.watches.append(record)


def state(attempt: str, seq: int) -> AttemptState:
    view = StudentView(exam="ex1", attempt=attempt, student=f"s-{attempt}", seq=seq)
    return AttemptState(view=view, last_client_seq=1)


async def _subscribe(
    watches: Watches, presence: Presence, proctor: Proctor, partitions: int
) -> None:
    await watches.watch(cast(Connection, proctor), "ex1")
    while not presence.watches or presence.watches[-1] is None:
        await asyncio.sleep(0.01)
    watch = presence.watches[-1]
    assert isinstance(watch, ExamWatch)
    request = watch.request
    watches.on_ready(
        WatchReady(exam="ex1", request=request, positions={p: 0 for p in range(partitions)})
    )
    async with asyncio.timeout(5):
        while not proctor.frames:
            await asyncio.sleep(0.01)


async def test_a_subscribe_during_a_rebuild_gets_a_retryable_error_not_a_partial_snapshot() -> None:
    partitions = 2
    settings = GatewaySettings(gateway=GatewayOptions(slot=0, watch_timeout_s=0.8))
    settings.kafka.events_partitions = partitions
    snapshots = InMemorySnapshotStore()
    await snapshots.claim("g1", partitions, 1)
    # Partition 0 is re-folded already, partition 1 not yet: "a1" is there, "a2" is missing.
    await snapshots.write([state("a1", 0)], {0: 0, 1: 0}, generation="g1", rebuilt=[0])
    presence = Presence()
    watches = Watches(
        settings, Hub(), cast(Publisher, presence), snapshots, GatewayMetrics(CollectorRegistry())
    )

    early = Proctor()
    await _subscribe(watches, presence, early, partitions)
    assert not any(isinstance(f, SnapshotFrame) for f in early.frames), "no partial snapshot"
    error = early.frames[0]
    assert isinstance(error, ErrorFrame)
    assert error.code == "snapshot_timeout" and error.retry_after_ms == REBUILD_RETRY_AFTER_MS
    assert "rebuilt" in error.message
    assert "ex1" not in early.watching

    await snapshots.write([state("a2", 0)], {}, generation="g1", rebuilt=[1])
    late = Proctor()
    await _subscribe(watches, presence, late, partitions)
    snapshot = late.frames[0]
    assert isinstance(snapshot, SnapshotFrame)
    assert {row.attempt for row in snapshot.students} == {"a1", "a2"}
    await watches.close()
