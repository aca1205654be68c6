"""The status service against the real Kafka, Redis and DynamoDB Local."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession

from adapters.dynamo_store import DynamoStatusStore
from adapters.settings import CommonSettings, DynamoSettings
from adapters.snapshot_store import RedisSnapshotStore
from schemas.events import (
    EventSource,
    ExamEvent,
    ProctorTimeExtended,
    StudentConnected,
    StudentProgress,
    StudentStatus,
    StudentSubmitted,
)
from services.status.service import StatusService
from tests.conftest import unique
from tests.services.status.conftest import (
    Log,
    ToggleProxy,
    committed,
    end_offsets,
    eventually,
    expected_states,
    metric,
    running,
    service_settings,
)

pytestmark = pytest.mark.integration

STUDENT = EventSource(kind="student", id="stu")
PROCTOR = EventSource(kind="proctor", id="proc1")
_ids = itertools.count()
ProxyFactory = Callable[[str, int], Awaitable[tuple[ToggleProxy, int]]]


def ev(kind: type[ExamEvent], exam: str, attempt: str, student: str, **fields: Any) -> ExamEvent:
    base: dict[str, Any] = {
        "id": f"{attempt}-{next(_ids)}",
        "exam": exam,
        "attempt": attempt,
        "student": student,
        "ts": 1_700_000_000_000 + next(_ids),
        "source": STUDENT,
    }
    return kind.model_validate(base | fields)


def attempt_events(
    exam: str, attempt: str, student: str, *, attempt_no: int = 1, steps: int = 3
) -> list[ExamEvent]:
    events = [
        ev(
            StudentConnected,
            exam,
            attempt,
            student,
            conn=f"c-{attempt}",
            gateway=0,
            attempt_no=attempt_no,
            name=student.title(),
            time_end=1_700_003_600_000,
        ),
    ]
    for step in range(1, steps + 1):
        events.append(
            ev(
                StudentProgress,
                exam,
                attempt,
                student,
                client_seq=2 * step,
                question_current=step,
                answered=step,
                total=10,
            )
        )
        status = "away" if step % 2 else "active"
        events.append(
            ev(StudentStatus, exam, attempt, student, client_seq=2 * step + 1, status=status)
        )
    return events


async def caught_up(snapshots: RedisSnapshotStore, log: Log) -> bool:
    marks = await snapshots.watermarks()
    return all(marks.get(p, -1) >= o for p, o in end_offsets(log.records).items())


async def test_log_reaches_redis_snapshot_and_watermarks(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    for n in range(6):
        await log.publish(*attempt_events(exam, f"{exam}-a{n}", f"s{n}"))
    config = service_settings(settings)
    async with running(config) as service:
        await eventually(lambda: caught_up(snapshots, log), what="watermarks at the log end")
        states, marks = await snapshots.read_exam(exam)
        assert {s.view.attempt: s for s in states} == expected_states(log.records)
        assert marks == end_offsets(log.records)
        assert metric(service, "status_records_total") == len(log.records)
        async with ClientSession() as http:
            base = f"http://127.0.0.1:{service.ops_port}"
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{base}/metrics") as response:
                assert "status_records_total" in await response.text()
        # Offsets are committed once DynamoDB has the batch too.
        await eventually(
            lambda: _committed_to(config, end_offsets(log.records)), what="offsets committed"
        )
    items = {v.student: v for v in await table.scan_exam(exam)}
    assert items == {s.view.student: s.view for s in expected_states(log.records).values()}


async def _committed_to(config: Any, ends: dict[int, int]) -> bool:
    done = await committed(config)
    return all(done.get(p, -1) >= o + 1 for p, o in ends.items())


async def test_dynamo_keeps_the_first_attempt_when_a_second_starts(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    await log.publish(*attempt_events(exam, "first", "ada", attempt_no=1, steps=2))
    async with running(service_settings(settings)):
        await eventually(lambda: caught_up(snapshots, log), what="first attempt folded")
        await eventually(lambda: _holds(table, exam, "ada", "first"), what="first attempt stored")
        await log.publish(*attempt_events(exam, "second", "ada", attempt_no=2, steps=3))
        await eventually(lambda: caught_up(snapshots, log), what="second attempt folded")
        second = await snapshots.read_attempt(exam, "second")
        assert second is not None and second.view.attempt_no == 2
    item = await table.get(exam, "ada")
    assert item == expected_states(log.records)["first"].view


async def test_first_attempt_wins_back_its_place_when_processed_after_the_second(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    await log.publish(*attempt_events(exam, "second", "ada", attempt_no=2))
    async with running(service_settings(settings)) as service:
        await eventually(lambda: _holds(table, exam, "ada", "second"), what="second attempt stored")
        # The first attempt's events reach the service only now (another partition lagging).
        await log.publish(*attempt_events(exam, "first", "ada", attempt_no=1, steps=1))
        await eventually(lambda: _holds(table, exam, "ada", "first"), what="first attempt stored")
        # Later updates of the second attempt never displace it again.
        await log.publish(ev(StudentSubmitted, exam, "second", "ada", score=99.0))
        await eventually(lambda: caught_up(snapshots, log), what="all folded")
        await service.flush()
    assert await table.get(exam, "ada") == expected_states(log.records)["first"].view


async def _holds(table: DynamoStatusStore, exam: str, student: str, attempt: str) -> bool:
    item = await table.get(exam, student)
    return item is not None and item.attempt == attempt


async def test_replays_leave_dynamodb_items_byte_identical(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    for n in range(8):
        await log.publish(*attempt_events(exam, f"{exam}-a{n}", f"s{n}", steps=4))
    await log.publish(*attempt_events(exam, f"{exam}-retry", "s0", attempt_no=2))
    async with running(service_settings(settings)):
        await eventually(lambda: caught_up(snapshots, log), what="first pass")
    before = sorted(await table.raw_exam_items(exam), key=lambda i: i["sk"]["S"])
    assert len(before) == 8

    # Replay 1: a new group over the same topic, table and Redis snapshot.
    replay = service_settings(settings, group_id=unique("status-replay"))
    async with running(replay) as service:
        await eventually(lambda: _committed_to(replay, end_offsets(log.records)), what="replay 1")
        assert metric(service, "status_dynamo_writes_total", outcome="written") == 0
    # Replay 2: a new group rebuilding every state from nothing (fresh Redis namespace).
    rebuilt = service_settings(settings, group_id=unique("status-rebuild"))
    rebuilt.redis.key_prefix = f"{settings.redis.key_prefix}rebuild:"
    async with running(rebuilt) as service:
        await eventually(lambda: _committed_to(rebuilt, end_offsets(log.records)), what="replay 2")
        assert metric(service, "status_dynamo_writes_total", outcome="written") == 0
        assert metric(service, "status_dynamo_writes_total", outcome="refused") > 0
    after = sorted(await table.raw_exam_items(exam), key=lambda i: i["sk"]["S"])
    assert after == before


async def test_time_extension_shows_in_the_stored_item(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    deadline = 1_700_003_600_000
    await log.publish(
        ev(StudentConnected, exam, "att", "ada", conn="c", gateway=0, time_end=deadline),
        ev(ProctorTimeExtended, exam, "att", "ada", source=PROCTOR, seconds=600),
    )
    async with running(service_settings(settings)):
        await eventually(lambda: caught_up(snapshots, log), what="folded")
        await eventually(lambda: _holds(table, exam, "ada", "att"), what="stored")
        await eventually(lambda: _extended(table, exam), what="extension stored")
    item = await table.get(exam, "ada")
    assert item is not None
    assert (item.time_end, item.extended_s) == (deadline + 600_000, 600)


async def _extended(table: DynamoStatusStore, exam: str) -> bool:
    item = await table.get(exam, "ada")
    return item is not None and item.extended_s == 600


async def test_malformed_records_are_counted_skipped_and_do_not_block(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    [connect] = await log.publish(ev(StudentConnected, exam, "att", "ada", conn="c", gateway=0))
    # Same key, so same partition, right behind a good record and before another.
    await log.publish_raw(b"att", b"\x00not json at all")
    await log.publish_raw(b"att", b'{"v": 1, "type": "student.status", "status": "asleep"}')
    await log.publish(ev(StudentSubmitted, exam, "att", "ada", score=12.0))
    config = service_settings(settings)
    async with running(config) as service:
        await eventually(lambda: caught_up(snapshots, log), what="past the bad records")
        await eventually(lambda: _committed_to(config, end_offsets(log.records)), what="committed")
        assert metric(service, "status_undecodable_records_total") == 2
        assert service.ready()
    state = await snapshots.read_attempt(exam, "att")
    assert state is not None and state.view.submitted and state.view.score == 12.0
    assert (await snapshots.watermarks())[connect.partition] == connect.offset + 3


@pytest.mark.parametrize("store", ["redis", "dynamo"])
async def test_unavailable_store_blocks_commits_until_it_is_back(
    store: str,
    settings: CommonSettings,
    log: Log,
    snapshots: RedisSnapshotStore,
    table: DynamoStatusStore,
    proxy_factory: ProxyFactory,
) -> None:
    exam = unique("exam")
    config = service_settings(settings)
    if store == "redis":
        host_port = settings.redis.url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        proxy, proxy_port = await proxy_factory(host, int(port))
        config.redis.url = f"redis://127.0.0.1:{proxy_port}/0"
    else:
        host_port = (settings.dynamo.endpoint or "").split("//", 1)[1]
        host, port = host_port.rsplit(":", 1)
        proxy, proxy_port = await proxy_factory(host, int(port))
        config.dynamo = DynamoSettings(
            **(settings.dynamo.model_dump() | {"endpoint": f"http://127.0.0.1:{proxy_port}"})
        )
    await log.publish(*attempt_events(exam, "a1", "ada", steps=1))
    async with running(config) as service:
        await eventually(lambda: _committed_to(config, end_offsets(log.records)), what="warm-up")
        proxy.cut()
        await log.publish(ev(StudentSubmitted, exam, "a1", "ada", score=50.0))
        await eventually(lambda: _not_ready(service), what="readiness false")
        if store == "dynamo":
            # Redis keeps the live snapshot current while DynamoDB is away.
            await eventually(lambda: caught_up(snapshots, log), what="snapshot written")
        item = await table.get(exam, "ada")
        assert item is not None and not item.submitted
        assert not await _committed_to(config, end_offsets(log.records))
        assert metric(service, "status_store_retries_total", store=store) > 0
        proxy.restore()
        await eventually(lambda: _committed_to(config, end_offsets(log.records)), what="commit")
        assert service.ready()
    item = await table.get(exam, "ada")
    assert item == expected_states(log.records)["a1"].view
    assert item is not None and item.submitted


@pytest.mark.parametrize("store", ["redis", "dynamo"])
async def test_a_stop_with_a_store_down_ends_at_once_and_commits_nothing_unwritten(
    store: str, settings: CommonSettings, log: Log, proxy_factory: ProxyFactory
) -> None:
    exam = unique("exam")
    config = service_settings(settings)  # drain_timeout_s 5: the retries used to wait it out
    if store == "redis":
        host, port = settings.redis.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        proxy, proxy_port = await proxy_factory(host, int(port))
        config.redis.url = f"redis://127.0.0.1:{proxy_port}/0"
    else:
        host, port = (settings.dynamo.endpoint or "").split("//", 1)[1].rsplit(":", 1)
        proxy, proxy_port = await proxy_factory(host, int(port))
        config.dynamo = DynamoSettings(
            **(settings.dynamo.model_dump() | {"endpoint": f"http://127.0.0.1:{proxy_port}"})
        )
    await log.publish(*attempt_events(exam, "a1", "ada", steps=1))
    service = StatusService(config)
    task = asyncio.create_task(service.run())
    try:
        await eventually(lambda: _committed_to(config, end_offsets(log.records)), what="warm-up")
        proxy.cut()
        await log.publish(ev(StudentSubmitted, exam, "a1", "ada", score=50.0))
        await eventually(lambda: _not_ready(service), what="retrying the store")
        loop = asyncio.get_running_loop()
        asked = loop.time()
        service.request_stop()
        async with asyncio.timeout(30):
            await task  # a clean stop: no exception
        assert loop.time() - asked < 3.0
    finally:
        task.cancel()
    # What the store did not take is applied again by the next start.
    assert not await _committed_to(config, end_offsets(log.records))


async def _not_ready(service: StatusService) -> bool:
    return not service.ready()


async def test_restart_resends_states_redis_got_ahead_of_dynamodb(
    settings: CommonSettings,
    log: Log,
    snapshots: RedisSnapshotStore,
    table: DynamoStatusStore,
    proxy_factory: ProxyFactory,
) -> None:
    """A crash between the Redis and the DynamoDB write must not leave DynamoDB behind."""
    exam = unique("exam")
    host_port = (settings.dynamo.endpoint or "").split("//", 1)[1]
    host, port = host_port.rsplit(":", 1)
    proxy, proxy_port = await proxy_factory(host, int(port))
    crashed = service_settings(settings, drain_timeout_s=0.5)
    crashed.dynamo = DynamoSettings(
        **(settings.dynamo.model_dump() | {"endpoint": f"http://127.0.0.1:{proxy_port}"})
    )
    async with running(crashed):
        proxy.cut()
        for n in range(3):
            await log.publish(*attempt_events(exam, f"a{n}", f"s{n}"))
        await eventually(lambda: caught_up(snapshots, log), what="Redis ahead")
    assert await table.scan_exam(exam) == []
    # Held at the first unwritten change: the start of each partition.
    assert set((await committed(crashed)).values()) <= {0}

    # Same group, DynamoDB reachable: the records come again, Redis already has their states.
    async with running(service_settings(settings)) as service:
        await eventually(lambda: _stored_count(table, exam, 3), what="DynamoDB caught up")
        assert metric(service, "status_resyncs_total") == 3
    items = {v.attempt: v for v in await table.scan_exam(exam)}
    assert items == {a: s.view for a, s in expected_states(log.records).items()}


async def _stored_count(table: DynamoStatusStore, exam: str, count: int) -> bool:
    return len(await table.scan_exam(exam)) >= count


async def test_two_instances_share_the_log_and_agree(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    config = service_settings(settings)
    for n in range(10):
        await log.publish(*attempt_events(exam, f"a{n}", f"s{n}", steps=1))
    async with running(config):
        await eventually(lambda: caught_up(snapshots, log), what="one instance")
        # A second member joins: partitions are revoked, drained and shared.
        async with running(config):
            for n in range(10):
                await log.publish(*attempt_events(exam, f"b{n}", f"s{n}", attempt_no=2, steps=1))
                await log.publish(ev(StudentSubmitted, exam, f"a{n}", f"s{n}", score=float(n)))
            await eventually(lambda: caught_up(snapshots, log), what="two instances")
            await eventually(
                lambda: _committed_to(config, end_offsets(log.records)), what="committed"
            )
    expected = expected_states(log.records)
    states, _ = await snapshots.read_exam(exam)
    assert {s.view.attempt: s for s in states} == expected
    items = {v.student: v for v in await table.scan_exam(exam)}
    assert items == {f"s{n}": expected[f"a{n}"].view for n in range(10)}


async def test_write_budget_paces_dynamodb_and_holds_the_commit_until_written(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    for n in range(40):
        await log.publish(*attempt_events(exam, f"{exam}-a{n}", f"s{n}", steps=2))
    config = service_settings(settings, dynamo_max_writes_per_s=5.0)
    async with running(config) as service:
        await eventually(lambda: caught_up(snapshots, log), what="Redis at the log end")
        # Redis (what dashboards read) is current; DynamoDB gets at most 5 writes a second,
        # and the log is not committed past a change DynamoDB does not have yet.
        assert metric(service, "status_dynamo_writes_total", outcome="written") < 40
        assert not await _committed_to(config, end_offsets(log.records))
        await eventually(
            lambda: _committed_to(config, end_offsets(log.records)),
            timeout=30,
            what="every item written, then committed",
        )
        assert metric(service, "status_dynamo_writes_total", outcome="written") == 40
    items = {v.student: v for v in await table.scan_exam(exam)}
    assert items == {s.view.student: s.view for s in expected_states(log.records).values()}
