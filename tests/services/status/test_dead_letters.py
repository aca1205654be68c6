"""Poison records never stall the status service (real Kafka, Redis and DynamoDB Local).

A 1e308 score written straight to the log (no gateway in the way) no longer decodes: the
schema bounds scores to what DynamoDB stores. Its state could still be rejected by DynamoDB
itself (an older record, a schema bug): the second test makes the real DynamoDB Local refuse
an item ("Number overflow") and checks the same promise: the item is put aside, its
neighbours land, the commit passes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pytest

from adapters.dead_letters import DeadLetter, read_letters
from adapters.dynamo_store import DynamoStatusStore, PutOutcome
from adapters.settings import CommonSettings
from adapters.snapshot_store import RedisSnapshotStore
from schemas.events import StudentConnected, StudentSubmitted, encode_event
from schemas.views import StudentView
from services.status.service import StatusService
from services.status.settings import Settings
from tests.conftest import unique
from tests.services.status.conftest import (
    Log,
    committed,
    end_offsets,
    eventually,
    expected_states,
    metric,
    running,
    service_settings,
)
from tests.services.status.test_status_service import attempt_events, caught_up, ev

pytestmark = pytest.mark.integration


async def letters(settings: CommonSettings) -> list[DeadLetter]:
    return await read_letters(settings.kafka, settings.kafka.events_topic)


async def committed_past(config: Settings, ends: dict[int, int]) -> bool:
    done = await committed(config)
    return all(done.get(p, -1) > o for p, o in ends.items())


async def test_a_1e308_score_is_put_aside_and_every_other_state_still_lands(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam, other = unique("exam"), unique("exam")
    await log.publish(ev(StudentConnected, exam, "bad", "bob", conn="c", gateway=0))
    submit = ev(StudentSubmitted, exam, "bad", "bob", score=12.0)
    poison_value = encode_event(submit).replace(b'"score":12.0', b'"score":1e308')
    assert poison_value != encode_event(submit)
    poison = await log.publish_raw(b"bad", poison_value)
    for n in range(3):
        await log.publish(*attempt_events(exam, f"a{n}", f"s{n}"))
        await log.publish(*attempt_events(other, f"b{n}", f"t{n}"))
    config = service_settings(settings)
    async with running(config) as service:
        await eventually(lambda: caught_up(snapshots, log), what="Redis past the poison")
        await eventually(
            lambda: committed_past(config, end_offsets(log.records)), what="committed past it"
        )
        assert (
            metric(service, "status_dead_letters_total", consumer="status", reason="undecodable")
            == 1
        )
        assert service.ready()
    expected = expected_states(log.records)
    for name in (exam, other):
        stored = {v.attempt: v for v in await table.scan_exam(name)}
        assert stored == {a: s.view for a, s in expected.items() if s.view.exam == name}
        for attempt, state in expected.items():
            if state.view.exam == name:
                assert await snapshots.read_attempt(name, attempt) == state
    [letter] = await letters(settings)
    assert (letter.partition, letter.offset, letter.key) == (poison.partition, poison.offset, "bad")
    assert letter.original_value() == poison_value
    assert (letter.consumer, letter.reason) == ("status", "undecodable")
    assert "score" in letter.error


class OverflowingStore(DynamoStatusStore):
    """The real table, but one student's score is made 1e308 on the way: DynamoDB refuses it."""

    async def put_first_attempt(self, views: Sequence[StudentView]) -> list[PutOutcome]:
        sent = [
            v.model_copy(update={"score": 1e308}) if v.student == "poison" else v for v in views
        ]
        return await super().put_first_attempt(sent)


async def test_an_item_dynamodb_rejects_is_put_aside_its_neighbours_land(
    settings: CommonSettings, log: Log, snapshots: RedisSnapshotStore, table: DynamoStatusStore
) -> None:
    exam = unique("exam")
    await log.publish(*attempt_events(exam, "p", "poison"))
    [submitted] = await log.publish(ev(StudentSubmitted, exam, "p", "poison", score=3.0))
    for n in range(4):
        await log.publish(*attempt_events(exam, f"a{n}", f"s{n}"))
    config = service_settings(settings)
    store = OverflowingStore(config.dynamo, workers=2)
    await store.open()
    service = StatusService(config, dynamo=store)
    try:
        async with running(config, service):
            await eventually(
                lambda: committed_past(config, end_offsets(log.records)), what="committed past"
            )
            assert (
                metric(
                    service, "status_dead_letters_total", consumer="status", reason="store_rejected"
                )
                == 1
            )
            assert metric(service, "status_dynamo_writes_total", outcome="rejected") == 1
            assert service.ready()
    finally:
        await store.close()
    stored = {v.student for v in await table.scan_exam(exam)}
    assert stored == {f"s{n}" for n in range(4)}
    [letter] = await letters(settings)
    assert letter.reason == "store_rejected" and "ValidationException" in letter.error
    assert (letter.partition, letter.offset) == (submitted.partition, submitted.offset)
    assert letter.original_value() is not None
    assert orjson.loads(letter.original_value() or b"")["type"] == "student.submitted"
    assert letter.item is not None and letter.item["student"] == "poison"
