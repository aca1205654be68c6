"""Rebuild against the real stack: equals DynamoDB after a normal status run, repairs after loss."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from adapters.dynamo_store import DynamoStatusStore
from adapters.settings import CommonSettings
from adapters.snapshot_store import RedisSnapshotStore
from audit.commands import rebuild
from audit.sample_exam import simulate
from audit.settings import Settings
from schemas.events import ExamEvent, StudentConnected, StudentProgress
from tests.audit.conftest import Sent, write_log
from tests.audit.support import STUDENT
from tests.conftest import unique
from tests.services.status.conftest import committed, eventually, running, service_settings

pytestmark = pytest.mark.integration


async def test_rebuild_matches_the_status_service_and_repairs_lost_views(
    settings: CommonSettings,
    audit: Settings,
    table: DynamoStatusStore,
    snapshots: RedisSnapshotStore,
) -> None:
    exam = unique("exam")
    sent = await write_log(settings, simulate(exam, students=15, steps=40, seed=9))
    # s00002 retakes the exam: DynamoDB must keep the first attempt.
    end = max(s.event.ts for s in sent)
    retake: list[ExamEvent] = [
        StudentConnected(
            id="r1",
            exam=exam,
            attempt=f"{exam}-retake",
            student="s00002",
            ts=end + 1,
            source=STUDENT,
            attempt_no=2,
            conn="c9",
            gateway=0,
        ),
        StudentProgress(
            id="r2",
            exam=exam,
            attempt=f"{exam}-retake",
            student="s00002",
            ts=end + 2,
            source=STUDENT,
            client_seq=1,
            answered=40,
            total=40,
        ),
    ]
    sent += await write_log(settings, retake)

    config = service_settings(settings)
    async with running(config):
        await eventually(lambda: _all_committed(config, sent), timeout=30, what="status caught up")
    check = await rebuild(audit, exam)
    assert check.differences == []
    assert len(check.expected) == 15
    assert check.expected["s00002"].attempt != f"{exam}-retake"

    # A DynamoDB item edited behind the system's back shows up field by field.
    item = check.expected["s00005"]
    await table.delete_table()
    await table.ensure_table()
    await table.put_first_attempt([item.model_copy(update={"answered": 0, "seq": 0})])
    tampered = await rebuild(audit, exam)
    assert {(d.student, d.field) for d in tampered.differences if d.kind == "field"} == {
        ("s00005", "answered"),
        ("s00005", "seq"),
    }
    assert sum(d.kind == "missing" for d in tampered.differences) == 14

    # Data loss: the table and the exam's Redis snapshot are gone; repair restores both.
    await table.delete_table()
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        await client.delete(
            *[
                key
                async for key in client.scan_iter(match=f"{settings.redis.key_prefix}exam:{exam}:*")
            ]
        )
    finally:
        await client.aclose()
    lost = await rebuild(audit, exam)
    assert len(lost.differences) == 15 and all(d.kind == "missing" for d in lost.differences)
    repaired = await rebuild(audit, exam, repair=True)
    assert repaired.written == 15 and repaired.after_repair == []
    assert repaired.snapshot_written == 16 and repaired.snapshot_behind == []  # the retake too
    assert {v.student: v for v in await table.scan_exam(exam)} == check.expected
    states, _ = await snapshots.read_exam(exam)
    by_attempt = {s.view.attempt: s.view for s in states}
    assert by_attempt[check.expected["s00007"].attempt] == check.expected["s00007"]
    assert by_attempt[f"{exam}-retake"].attempt_no == 2
    assert (await rebuild(audit, exam)).differences == []


async def _all_committed(config: object, sent: list[Sent]) -> bool:
    ends: dict[int, int] = {}
    for item in sent:
        ends[item.partition] = max(ends.get(item.partition, -1), item.offset)
    done = await committed(config)  # type: ignore[arg-type]
    return all(done.get(p, -1) >= o + 1 for p, o in ends.items())
