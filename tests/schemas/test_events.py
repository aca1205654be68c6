"""The exam event log's records: round-trips, the type tag, and what bad records get."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas.events import (
    EXAM_EVENT,
    STUDENT_FACING,
    AlertRaised,
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    ProctorPaused,
    ProctorResumed,
    ProctorTimeExtended,
    StudentAnswer,
    StudentBackOnline,
    StudentConnected,
    StudentOffline,
    StudentProgress,
    StudentStatus,
    StudentSubmitted,
    decode_event,
    encode_event,
    log_key,
)

STUDENT = EventSource(kind="student", id="stu-1", gateway=3)
PROCTOR = EventSource(kind="proctor", id="proc-1", gateway=0)
NOTIFIER = EventSource(kind="notifier", id="notifier-0")
BASE: dict[str, Any] = {
    "exam": "exam-1",
    "attempt": "att-1",
    "student": "stu-1",
    "ts": 1_700_000_000_000,
}


def samples() -> list[ExamEvent]:
    student = {**BASE, "source": STUDENT, "client_ts": 1_699_999_999_000, "client_seq": 4}
    proctor = {**BASE, "student": None, "source": PROCTOR}
    notifier = {**BASE, "source": NOTIFIER}
    return [
        StudentConnected(
            **{**BASE, "source": STUDENT},
            id="e1",
            name="Ada",
            attempt_no=2,
            time_end=1_700_003_600_000,
            conn="conn-9",
            gateway=3,
        ),
        StudentStatus(**student, id="e2", status="away"),
        StudentProgress(
            **student, id="e3", question_current=4, answered=3, total=10, time_remaining_s=600
        ),
        StudentAnswer(**student, id="e4", question=4, answer="42"),
        StudentSubmitted(**student, id="e5", score=87.5),
        StudentOffline(**notifier, id="e6", reason="heartbeat_timeout", since=5),
        StudentBackOnline(**notifier, id="e7", offline_ms=1200, reason="closed"),
        ProctorMessage(**proctor, id="e8", text="Eyes on your own screen"),
        ProctorAnnouncement(**{**proctor, "attempt": None}, id="e9", text="Ten minutes left"),
        ProctorPaused(**proctor, id="e10", reason="fire alarm"),
        ProctorResumed(**proctor, id="e11"),
        ProctorTimeExtended(**proctor, id="e12", seconds=300),
        AlertRaised(**notifier, id="e13", kind="repeated_away", detail="5 times"),
    ]


def valid_status(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": 1,
        "type": "student.status",
        "id": "evt-1",
        "exam": "exam-1",
        "attempt": "att-1",
        "student": "stu-1",
        "ts": 1000,
        "client_seq": 1,
        "source": {"kind": "student", "id": "stu-1", "gateway": 0},
        "status": "active",
    }
    record.update(changes)
    return record


def errors_of(record: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        decode_event(orjson.dumps(record))
    return [(".".join(str(p) for p in e["loc"]), e["type"]) for e in caught.value.errors()]


def test_samples_cover_every_event_type() -> None:
    assert {event.type for event in samples()} == set(
        EXAM_EVENT.json_schema()["discriminator"]["mapping"]
    )


@pytest.mark.parametrize("event", samples(), ids=lambda event: event.type)
def test_encode_then_decode_gives_the_same_event(event: ExamEvent) -> None:
    raw = encode_event(event)

    assert decode_event(raw) == event
    assert encode_event(decode_event(raw)) == raw


@pytest.mark.parametrize("event", samples(), ids=lambda event: event.type)
def test_encoding_is_compact_and_leaves_out_nulls(event: ExamEvent) -> None:
    record = orjson.loads(encode_event(event))

    assert None not in record.values()
    assert record["type"] == event.type
    assert record["v"] == 1


def test_the_type_tag_picks_the_model() -> None:
    event = decode_event(orjson.dumps(valid_status(status="away")))

    assert isinstance(event, StudentStatus)
    assert event.status == "away"
    assert event.source == EventSource(kind="student", id="stu-1", gateway=0)


def test_log_key_is_the_attempt_or_the_exam_for_exam_wide_events() -> None:
    by_type = {event.type: event for event in samples()}

    assert log_key(by_type["student.status"]) == b"att-1"
    assert log_key(by_type["proctor.announcement"]) == b"exam:exam-1"


def test_student_facing_commands_are_the_proctor_events() -> None:
    assert {model.model_fields["type"].default for model in STUDENT_FACING} == {
        "proctor.message",
        "proctor.announcement",
        "proctor.paused",
        "proctor.resumed",
        "proctor.time_extended",
    }


def test_events_are_immutable() -> None:
    event = samples()[1]
    with pytest.raises(ValidationError):
        event.id = "other"  # type: ignore[misc]


def test_unknown_type_is_rejected_by_the_tag() -> None:
    assert errors_of(valid_status(type="student.teleported")) == [("", "union_tag_invalid")]


def test_missing_type_is_rejected() -> None:
    record = valid_status()
    del record["type"]

    assert errors_of(record) == [("", "union_tag_not_found")]


def test_extra_fields_are_forbidden() -> None:
    assert errors_of(valid_status(mood="sunny")) == [("student.status.mood", "extra_forbidden")]


def test_extra_fields_in_the_source_are_forbidden() -> None:
    source = {"kind": "student", "id": "stu-1", "role": "admin"}

    assert errors_of(valid_status(source=source)) == [
        ("student.status.source.role", "extra_forbidden")
    ]


@pytest.mark.parametrize(
    ("bad_id", "error"),
    [
        ("", "string_too_short"),
        ("x" * 129, "string_too_long"),
        ("has space", "string_pattern_mismatch"),
        ("slash/y", "string_pattern_mismatch"),
        ("quote'", "string_pattern_mismatch"),
        ("ünïcode", "string_pattern_mismatch"),
        (42, "string_type"),
    ],
)
@pytest.mark.parametrize("field", ["id", "exam", "attempt", "student"])
def test_bad_ids_are_rejected(field: str, bad_id: object, error: str) -> None:
    assert errors_of(valid_status(**{field: bad_id})) == [(f"student.status.{field}", error)]


def test_ids_may_use_the_documented_punctuation() -> None:
    event = decode_event(orjson.dumps(valid_status(id="a.b_c:d@e-f", attempt="ATT:9")))

    assert (event.id, event.attempt) == ("a.b_c:d@e-f", "ATT:9")


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"ts": -1}, "ts"),
        ({"client_ts": -5}, "client_ts"),
        ({"client_seq": 0}, "client_seq"),
        ({"client_seq": -3}, "client_seq"),
        ({"source": {"kind": "student", "id": "s", "gateway": "zero"}}, "source.gateway"),
    ],
)
def test_negative_or_out_of_range_numbers_are_rejected(changes: dict[str, Any], where: str) -> None:
    locations = [loc for loc, _ in errors_of(valid_status(**changes))]

    assert locations == [f"student.status.{where}"]


@pytest.mark.parametrize(
    ("record", "where"),
    [
        (
            {"type": "student.progress", "answered": -1, "total": 10},
            "student.progress.answered",
        ),
        (
            {"type": "student.progress", "answered": 1, "total": 10, "time_remaining_s": -1},
            "student.progress.time_remaining_s",
        ),
        ({"type": "student.back_online", "offline_ms": -1, "reason": "closed"}, "offline_ms"),
        ({"type": "proctor.time_extended", "seconds": 0}, "proctor.time_extended.seconds"),
        ({"type": "proctor.time_extended", "seconds": 86_401}, "proctor.time_extended.seconds"),
        ({"type": "student.connected", "conn": "c1", "gateway": -1}, "student.connected.gateway"),
    ],
)
def test_type_specific_numbers_are_checked(record: dict[str, Any], where: str) -> None:
    base = valid_status()
    del base["status"]
    locations = [loc for loc, _ in errors_of({**base, **record})]

    assert len(locations) == 1 and locations[0].endswith(where)


def test_wrong_schema_version_is_rejected() -> None:
    assert errors_of(valid_status(v=2)) == [("student.status.v", "literal_error")]


def test_unknown_source_kind_is_rejected() -> None:
    source = {"kind": "admin", "id": "root"}

    assert errors_of(valid_status(source=source)) == [
        ("student.status.source.kind", "literal_error")
    ]


def test_status_values_are_limited_to_active_and_away() -> None:
    # "offline" is the server's verdict (student.offline), never a client's status.
    assert errors_of(valid_status(status="offline")) == [("student.status.status", "literal_error")]


def test_proctor_texts_must_be_non_empty_and_bounded() -> None:
    base = {**valid_status(type="proctor.message"), "source": {"kind": "proctor", "id": "p"}}
    del base["status"]

    assert errors_of({**base, "text": ""}) == [("proctor.message.text", "string_too_short")]
    assert errors_of({**base, "text": "x" * 2001}) == [("proctor.message.text", "string_too_long")]


def test_bad_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        decode_event(b"{not json")
    assert caught.value.errors()[0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("record", "where"),
    [
        ({"type": "student.submitted", "score": 1e308}, "student.submitted.score"),
        ({"type": "student.submitted", "score": 1e-200}, "student.submitted.score"),
        ({"type": "student.progress", "answered": 1, "total": 10**6}, "student.progress.total"),
        ({"type": "student.answer", "question": 10**6, "answer": "a"}, "student.answer.question"),
        (
            {"type": "student.back_online", "offline_ms": 2**53, "reason": "closed"},
            "student.back_online.offline_ms",
        ),
        (
            {"type": "student.connected", "conn": "c1", "gateway": 1, "time_end": 10**15},
            "student.connected.time_end",
        ),
    ],
)
def test_numbers_a_view_cannot_store_are_refused(record: dict[str, Any], where: str) -> None:
    base = valid_status()
    del base["status"]
    locations = [loc for loc, _ in errors_of({**base, **record})]

    assert locations == [where]


def test_client_seq_and_times_stay_javascript_safe() -> None:
    assert [loc for loc, _ in errors_of(valid_status(client_seq=2**53))] == [
        "student.status.client_seq"
    ]
    assert [loc for loc, _ in errors_of(valid_status(ts=10**15))] == ["student.status.ts"]
