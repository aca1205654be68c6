"""Redis loses the snapshot mid-exam (FLUSHALL, here confined to the test's prefix): the status
service notices by itself, marks the snapshot rebuilding, re-folds the log, and ends with
every attempt as the log's fold says; readers never get the partial snapshot as complete.
Real Kafka, Redis and DynamoDB Local."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import pytest
import redis.asyncio as aioredis

from adapters.dynamo_store import DynamoStatusStore
from adapters.settings import CommonSettings
from adapters.snapshot_store import RedisSnapshotStore, SnapshotIncomplete
from domain.first_attempt import item_key
from schemas.events import ExamEvent, StudentProgress, StudentStatus
from schemas.views import AttemptState
from services.status.service import StatusService
from tests.conftest import unique
from tests.services.status.conftest import (
    Log,
    end_offsets,
    eventually,
    expected_states,
    metric,
    running,
    service_settings,
)
from tests.services.status.test_status_service import attempt_events, ev

pytestmark = pytest.mark.integration

ATTEMPTS = 200
MOVERS = 20  # the attempts that keep sending after the loss


class GatedSnapshots(RedisSnapshotStore):
    """The real store; once ``hold`` names the generation before a loss, writes of any newer
    generation wait for ``gate``, so the test can look at the snapshot mid-rebuild."""

    hold: str | None = None
    gate: asyncio.Event

    async def write(
        self,
        states: Sequence[AttemptState],
        watermarks: Mapping[int, int],
        *,
        generation: str | None = None,
        rebuilt: Iterable[int] = (),
    ) -> bool:
        if self.hold is not None and generation not in (None, self.hold):
            await self.gate.wait()
        return await super().write(states, watermarks, generation=generation, rebuilt=rebuilt)


@pytest.fixture
async def redis_client(settings: CommonSettings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        yield client
    finally:
        await _flush_prefix(client, settings)
        await client.aclose()


async def _flush_prefix(client: aioredis.Redis, settings: CommonSettings) -> int:
    """FLUSHALL for this test's keys only (the Redis is shared)."""
    keys = [key async for key in client.scan_iter(match=f"{settings.redis.key_prefix}*")]
    if keys:
        await client.delete(*keys)
    return len(keys)


def _exam_events(exam: str) -> list[ExamEvent]:
    events: list[ExamEvent] = []
    for n in range(ATTEMPTS):
        events += attempt_events(exam, f"{exam}-a{n}", f"s{n}", steps=2)
    return events


def _moves(exam: str, client_seq: int) -> list[ExamEvent]:
    moves: list[ExamEvent] = []
    for n in range(MOVERS):
        attempt, student = f"{exam}-a{n}", f"s{n}"
        if client_seq % 2:
            moves.append(
                ev(StudentStatus, exam, attempt, student, client_seq=client_seq, status="away")
            )
        else:
            moves.append(
                ev(
                    StudentProgress,
                    exam,
                    attempt,
                    student,
                    client_seq=client_seq,
                    question_current=7,
                    answered=client_seq % 10,
                    total=10,
                )
            )
    return moves


async def _complete_and_caught_up(snapshots: RedisSnapshotStore, log: Log) -> bool:
    marker = await snapshots.marker()
    if marker is None or not marker.complete:
        return False
    marks = await snapshots.watermarks()
    return all(marks.get(p, -1) >= o for p, o in end_offsets(log.records).items())


async def _dynamo_matches_the_log(table: DynamoStatusStore, exam: str, log: Log) -> bool:
    expected = {item_key(s.view): s.view for s in expected_states(log.records).values()}
    stored = {item_key(v): v for v in await table.scan_exam(exam)}
    return stored == expected


def _dynamo_writes(service: StatusService) -> float:
    return sum(
        metric(service, "status_dynamo_writes_total", outcome=outcome)
        for outcome in ("written", "refused", "failed", "rejected")
    )


async def _check_rebuilt(
    snapshots: RedisSnapshotStore, table: DynamoStatusStore, exam: str, log: Log
) -> None:
    await eventually(
        lambda: _complete_and_caught_up(snapshots, log), timeout=60, what="snapshot rebuilt"
    )
    states, marks = await snapshots.read_exam(exam)  # complete: no SnapshotIncomplete
    folded = expected_states(log.records)
    assert len(states) == ATTEMPTS
    assert {s.view.attempt: s for s in states} == folded
    assert marks == end_offsets(log.records), "watermarks are exactly the folded log"
    await eventually(
        lambda: _dynamo_matches_the_log(table, exam, log), timeout=30, what="DynamoDB = log"
    )


async def test_a_flushed_snapshot_is_noticed_marked_and_rebuilt_from_the_log(
    settings: CommonSettings, log: Log, table: DynamoStatusStore, redis_client: aioredis.Redis
) -> None:
    exam = unique("exam")
    await log.publish(*_exam_events(exam))
    snapshots = GatedSnapshots(redis_client, settings.redis, topic=settings.kafka.events_topic)
    snapshots.gate = asyncio.Event()
    config = service_settings(settings, snapshot_check_interval_s=0.2, max_batch_records=100)
    async with running(config, StatusService(config, snapshots=snapshots)) as service:
        await _check_rebuilt(snapshots, table, exam, log)  # the first fold, as usual
        before = await snapshots.generation()
        assert before is not None
        rebuilds = metric(service, "status_snapshot_rebuilds_total")
        writes = _dynamo_writes(service)

        snapshots.hold = before
        assert await _flush_prefix(redis_client, settings) > ATTEMPTS // 100
        await log.publish(*_moves(exam, 100))

        # Noticed without anyone running a repair; the rebuild shows while it runs.
        await eventually(
            lambda: _rebuilding(snapshots, before), timeout=10, what="snapshot marked rebuilding"
        )
        marker = await snapshots.marker()
        assert marker is not None and marker.generation != before
        assert marker.rebuilding == set(range(settings.kafka.events_partitions))
        with pytest.raises(SnapshotIncomplete):
            await snapshots.read_exam(exam)
        with pytest.raises(SnapshotIncomplete):
            await snapshots.read_attempt(exam, f"{exam}-a{ATTEMPTS - 1}")
        await eventually(
            lambda: _counted(service, "status_snapshot_rebuilds_total", rebuilds + 1),
            what="the rebuild counted",
        )
        await log.publish(*_moves(exam, 101))  # the exam goes on meanwhile

        snapshots.gate.set()
        await _check_rebuilt(snapshots, table, exam, log)
        assert metric(service, "status_snapshot_rebuilds_total") == rebuilds + 1
        assert metric(service, "status_snapshot_rebuilding_partitions") == 0
        # The re-fold does not rewrite what DynamoDB already had: only the movers' changes.
        assert _dynamo_writes(service) - writes <= 2 * MOVERS


async def test_an_idle_service_notices_the_loss_and_rebuilds(
    settings: CommonSettings, log: Log, table: DynamoStatusStore, redis_client: aioredis.Redis
) -> None:
    exam = unique("exam")
    await log.publish(*_exam_events(exam))
    snapshots = RedisSnapshotStore(redis_client, settings.redis, topic=settings.kafka.events_topic)
    config = service_settings(settings, snapshot_check_interval_s=0.2)
    async with running(config) as service:
        await _check_rebuilt(snapshots, table, exam, log)
        before = await snapshots.generation()
        await _flush_prefix(redis_client, settings)  # and nobody sends anything
        await eventually(
            lambda: _regenerated(snapshots, before), timeout=10, what="loss noticed while idle"
        )
        await _check_rebuilt(snapshots, table, exam, log)
        assert metric(service, "status_snapshot_rebuilds_total") == 1
        assert metric(service, "status_dynamo_writes_total", outcome="written") == ATTEMPTS


async def _rebuilding(snapshots: RedisSnapshotStore, before: str) -> bool:
    marker = await snapshots.marker()
    return marker is not None and marker.generation != before and not marker.complete


async def _regenerated(snapshots: RedisSnapshotStore, before: str | None) -> bool:
    current = await snapshots.generation()
    return current is not None and current != before


async def _counted(service: StatusService, name: str, value: float) -> bool:
    return metric(service, name) == value
