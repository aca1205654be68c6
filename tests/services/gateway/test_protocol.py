"""The gateway protocol as a pure function: a frame and the token's identity in, a decision out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from adapters.tokens import Identity, ProctorIdentity, StudentIdentity
from schemas.events import (
    EventSource,
    ProctorAnnouncement,
    ProctorMessage,
    ProctorPaused,
    ProctorResumed,
    ProctorTimeExtended,
    StudentAnswer,
    StudentProgress,
    StudentStatus,
    StudentSubmitted,
    log_key,
)
from schemas.frames import ErrorCode, ErrorFrame
from schemas.legacy import LEGACY_TYPE
from services.gateway.protocol import (
    Decision,
    Heartbeat,
    ProctorCommand,
    Publish,
    Reject,
    Unwatch,
    Watch,
    claims_problem,
    interpret,
)

SLOT = 7
NOW_MS = 1_709_294_400_000  # 2024-03-01T12:00:00Z
MAX_BYTES = 4096

STUDENT = StudentIdentity(role="student", sub="stu-1", exam="exam-1", attempt="att-1")
PROCTOR = ProctorIdentity(role="proctor", sub="proc-1", exams=("exam-1", "exam-2"))
STUDENT_SOURCE = EventSource(kind="student", id="stu-1", gateway=SLOT)
PROCTOR_SOURCE = EventSource(kind="proctor", id="proc-1", gateway=SLOT)


def decide(frame: dict[str, Any] | list[Any] | str | bytes, who: Identity = STUDENT) -> Decision:
    raw = frame if isinstance(frame, str | bytes) else orjson.dumps(frame)
    return interpret(raw, who, gateway=SLOT, now_ms=NOW_MS, max_frame_bytes=MAX_BYTES)


def rejected(decision: Decision) -> ErrorFrame:
    assert isinstance(decision, Reject), decision
    return decision.error


def assert_rejected(decision: Decision, code: ErrorCode, frame_id: str | None = None) -> ErrorFrame:
    error = rejected(decision)
    assert (error.code, error.id) == (code, frame_id), error
    assert error.message
    return error


def published(decision: Decision) -> Publish:
    assert isinstance(decision, Publish), decision
    return decision


def legacy(**data: Any) -> dict[str, Any]:
    quiz = {
        "quiz_id": "exam-1",
        "quiz_attempt_id": "att-1",
        "student_id": "stu-1",
        "user_status": "active",
        "question_answered": 3,
        "question_total": 10,
        "question_number_current": 4,
    }
    quiz.update(data)
    return {
        "type": LEGACY_TYPE,
        "clientConnectionSocketId": "sock-1",
        "message": {"action": "lmsQuizMonitoringStudent", "data": quiz},
    }


# -- student frames -------------------------------------------------------------------------


def test_heartbeat() -> None:
    assert decide({"type": "heartbeat"}) == Heartbeat()


@pytest.mark.parametrize(
    "raw", [b'{"type":"heartbeat"}', '{"type":"heartbeat"}', b'{ "type": "heartbeat" }']
)
def test_every_spelling_of_a_heartbeat_is_one(raw: str | bytes) -> None:
    # The clients' own spelling skips the parser; any other takes the general path.
    assert decide(raw) == Heartbeat()
    assert_rejected(decide(raw, PROCTOR), "not_allowed")


def test_status_becomes_an_event_for_the_tokens_attempt_acked_by_its_id() -> None:
    decision = published(
        decide({"type": "status", "id": "f1", "seq": 3, "ts": NOW_MS - 40, "status": "away"})
    )

    assert decision.ack_id == "f1"
    assert decision.events == (
        StudentStatus(
            id="f1",
            exam="exam-1",
            attempt="att-1",
            student="stu-1",
            ts=NOW_MS,
            client_ts=NOW_MS - 40,
            client_seq=3,
            source=STUDENT_SOURCE,
            status="away",
        ),
    )
    assert log_key(decision.events[0]) == b"att-1"


def test_progress_answer_and_submit_become_their_events() -> None:
    frames = [
        {
            "type": "progress",
            "id": "p",
            "seq": 1,
            "question_current": 2,
            "answered": 1,
            "total": 9,
            "time_remaining_s": 600,
        },
        {"type": "answer", "id": "a", "seq": 2, "question": 2, "answer": "B"},
        {"type": "submit", "id": "s", "seq": 3, "score": 7.5},
    ]
    events = [published(decide(frame)).events[0] for frame in frames]

    progress, answer, submit = events
    assert isinstance(progress, StudentProgress)
    assert (progress.question_current, progress.answered, progress.total) == (2, 1, 9)
    assert progress.time_remaining_s == 600
    assert isinstance(answer, StudentAnswer) and (answer.question, answer.answer) == (2, "B")
    assert isinstance(submit, StudentSubmitted) and submit.score == 7.5
    for event, frame in zip(events, frames, strict=True):
        assert (event.id, event.client_seq) == (frame["id"], frame["seq"])
        assert (event.exam, event.attempt, event.student) == ("exam-1", "att-1", "stu-1")
        assert event.source == STUDENT_SOURCE
        assert event.ts == NOW_MS


@pytest.mark.parametrize("field", ["attempt", "exam", "student", "source"])
def test_a_student_frame_cannot_name_anyone(field: str) -> None:
    frame = {"type": "status", "id": "f1", "seq": 1, "status": "away", field: "att-2"}

    error = assert_rejected(decide(frame), "bad_frame", "f1")
    assert field in error.message


def test_identity_comes_from_the_token_of_whoever_sends_it() -> None:
    other = StudentIdentity(role="student", sub="stu-2", exam="exam-1", attempt="att-2")
    event = published(decide({"type": "status", "id": "f1", "seq": 1, "status": "away"}, other))

    assert (event.events[0].attempt, event.events[0].student) == ("att-2", "stu-2")
    assert event.events[0].source == EventSource(kind="student", id="stu-2", gateway=SLOT)


@pytest.mark.parametrize(
    ("frame", "frame_id"),
    [
        ({"type": "subscribe", "exam": "exam-1"}, None),
        ({"type": "unsubscribe", "exam": "exam-1"}, None),
        ({"type": "message", "id": "c1", "exam": "exam-1", "attempt": "att-2", "text": "hi"}, "c1"),
        ({"type": "announce", "id": "c2", "exam": "exam-1", "text": "hi"}, "c2"),
        ({"type": "pause", "id": "c3", "exam": "exam-1", "attempt": "att-1"}, "c3"),
        ({"type": "resume", "id": "c4", "exam": "exam-1", "attempt": "att-1"}, "c4"),
        ({"type": "extend", "id": "c5", "exam": "exam-1", "attempt": "att-1", "seconds": 9}, "c5"),
    ],
)
def test_proctor_frames_from_a_student_are_not_allowed(
    frame: dict[str, Any], frame_id: str | None
) -> None:
    assert_rejected(decide(frame, STUDENT), "not_allowed", frame_id)


# -- proctor frames -------------------------------------------------------------------------


def test_subscribe_and_unsubscribe_an_assigned_exam() -> None:
    assert decide({"type": "subscribe", "exam": "exam-2"}, PROCTOR) == Watch("exam-2")
    assert decide({"type": "unsubscribe", "exam": "exam-1"}, PROCTOR) == Unwatch("exam-1")


@pytest.mark.parametrize("frame_type", ["subscribe", "unsubscribe"])
def test_watching_an_exam_not_in_the_token_is_forbidden(frame_type: str) -> None:
    error = assert_rejected(decide({"type": frame_type, "exam": "exam-9"}, PROCTOR), "forbidden")
    assert "exam-9" in error.message


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            {"type": "message", "text": "Eyes on your screen"},
            ProctorMessage(
                id="c1",
                exam="exam-1",
                attempt="att-3",
                ts=NOW_MS,
                source=PROCTOR_SOURCE,
                text="Eyes on your screen",
            ),
        ),
        (
            {"type": "pause", "reason": "fire alarm"},
            ProctorPaused(
                id="c1",
                exam="exam-1",
                attempt="att-3",
                ts=NOW_MS,
                source=PROCTOR_SOURCE,
                reason="fire alarm",
            ),
        ),
        (
            {"type": "resume"},
            ProctorResumed(
                id="c1", exam="exam-1", attempt="att-3", ts=NOW_MS, source=PROCTOR_SOURCE
            ),
        ),
        (
            {"type": "extend", "seconds": 300},
            ProctorTimeExtended(
                id="c1",
                exam="exam-1",
                attempt="att-3",
                ts=NOW_MS,
                source=PROCTOR_SOURCE,
                seconds=300,
            ),
        ),
    ],
    ids=lambda value: value["type"] if isinstance(value, dict) else "",
)
def test_attempt_commands_wait_for_the_attempt_check(
    frame: dict[str, Any], expected: ProctorMessage
) -> None:
    decision = decide({**frame, "id": "c1", "exam": "exam-1", "attempt": "att-3"}, PROCTOR)

    # The attempt named by a proctor is checked against the exam (Redis) before publishing.
    assert isinstance(decision, ProctorCommand)
    assert (decision.event, decision.ack_id) == (expected, "c1")


def test_announce_is_an_exam_wide_event_published_at_once() -> None:
    decision = published(
        decide({"type": "announce", "id": "c9", "exam": "exam-2", "text": "Ten minutes"}, PROCTOR)
    )

    assert decision.ack_id == "c9"
    assert decision.events == (
        ProctorAnnouncement(
            id="c9",
            exam="exam-2",
            attempt=None,
            ts=NOW_MS,
            source=PROCTOR_SOURCE,
            text="Ten minutes",
        ),
    )
    assert log_key(decision.events[0]) == b"exam:exam-2"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message", "id": "c1", "exam": "exam-9", "attempt": "att-1", "text": "hi"},
        {"type": "announce", "id": "c1", "exam": "exam-9", "text": "hi"},
        {"type": "pause", "id": "c1", "exam": "exam-9", "attempt": "att-1"},
        {"type": "resume", "id": "c1", "exam": "exam-9", "attempt": "att-1"},
        {"type": "extend", "id": "c1", "exam": "exam-9", "attempt": "att-1", "seconds": 60},
    ],
    ids=lambda frame: frame["type"],
)
def test_commands_for_an_exam_not_in_the_token_are_forbidden(frame: dict[str, Any]) -> None:
    assert_rejected(decide(frame, PROCTOR), "forbidden", "c1")


@pytest.mark.parametrize(
    ("frame", "frame_id"),
    [
        ({"type": "heartbeat"}, None),
        ({"type": "status", "id": "f1", "seq": 1, "status": "away"}, "f1"),
        ({"type": "progress", "id": "f2", "seq": 1, "answered": 1, "total": 2}, "f2"),
        ({"type": "answer", "id": "f3", "seq": 1, "question": 1, "answer": "A"}, "f3"),
        ({"type": "submit", "id": "f4", "seq": 1}, "f4"),
        (legacy(), None),
    ],
)
def test_student_frames_from_a_proctor_are_not_allowed(
    frame: dict[str, Any], frame_id: str | None
) -> None:
    assert_rejected(decide(frame, PROCTOR), "not_allowed", frame_id)


# -- malformed input ------------------------------------------------------------------------


def test_an_oversized_frame_is_refused_before_parsing() -> None:
    frame = "{" + " " * MAX_BYTES + "}"

    error = assert_rejected(decide(frame), "frame_too_large")
    assert str(MAX_BYTES) in error.message


def test_size_counts_bytes_not_characters() -> None:
    text = "é" * (MAX_BYTES // 2)  # fits in characters, twice the limit in UTF-8
    frame = orjson.dumps({"type": "answer", "id": "f1", "seq": 1, "question": 1, "answer": text})

    assert_rejected(decide(frame.decode()), "frame_too_large")


def test_a_frame_of_exactly_the_limit_is_accepted() -> None:
    frame = orjson.dumps({"type": "answer", "id": "f1", "seq": 1, "question": 1, "answer": ""})
    padded = frame[:-1] + b" " * (MAX_BYTES - len(frame)) + b"}"

    assert len(padded) == MAX_BYTES
    assert isinstance(decide(padded), Publish)


@pytest.mark.parametrize("raw", ["{not json", "", "{'single': 'quotes'}", b"\xff\xfe", "[1,"])
def test_bad_json(raw: str | bytes) -> None:
    assert_rejected(decide(raw), "bad_json")


@pytest.mark.parametrize("raw", ["[]", '["status"]', "42", '"status"', "null", "true"])
def test_json_that_is_not_an_object_is_a_bad_frame(raw: str) -> None:
    assert_rejected(decide(raw), "bad_frame")


def test_unknown_type_echoes_the_frame_id() -> None:
    error = assert_rejected(decide({"type": "teleport", "id": "f9"}), "unknown_type", "f9")
    assert "teleport" in error.message


@pytest.mark.parametrize("frame_type", [None, 7, 1.5, True])
def test_missing_or_non_text_type_is_unknown(frame_type: object) -> None:
    frame = {"id": "f1"} if frame_type is None else {"type": frame_type, "id": "f1"}

    assert_rejected(decide(frame), "unknown_type", "f1")


@pytest.mark.parametrize("frame_type", [["status"], {"status": 1}])
def test_unhashable_type_is_an_error_frame_not_a_crash(frame_type: object) -> None:
    assert rejected(decide({"type": frame_type, "id": "f1"})).code in {"unknown_type", "bad_frame"}


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "status", "id": "f1", "seq": 0, "status": "away"}, "seq"),
        ({"type": "status", "id": "f1", "seq": 1, "status": "sleeping"}, "status"),
        ({"type": "status", "id": "f1", "status": "away"}, "seq"),
        ({"type": "progress", "id": "f1", "seq": 1, "answered": -1, "total": 2}, "answered"),
        ({"type": "answer", "id": "f1", "seq": 1, "question": 1, "answer": "x" * 4001}, "answer"),
    ],
)
def test_an_invalid_student_frame_is_a_bad_frame_naming_the_field(
    frame: dict[str, Any], field: str
) -> None:
    error = assert_rejected(decide(frame), "bad_frame", "f1")
    assert field in error.message


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "extend", "id": "c1", "exam": "exam-1", "attempt": "a", "seconds": 0}, "seconds"),
        ({"type": "message", "id": "c1", "exam": "exam-1", "attempt": "a", "text": ""}, "text"),
        ({"type": "message", "id": "c1", "exam": "exam-1", "text": "hi"}, "attempt"),
        ({"type": "subscribe", "id": "c1", "exam": "exam-1"}, "id"),
    ],
)
def test_an_invalid_proctor_frame_is_a_bad_frame_naming_the_field(
    frame: dict[str, Any], field: str
) -> None:
    error = assert_rejected(decide(frame, PROCTOR), "bad_frame", "c1")
    assert field in error.message


def test_several_errors_are_counted_in_the_message() -> None:
    error = assert_rejected(decide({"type": "progress", "id": "f1", "seq": 0}), "bad_frame", "f1")
    assert "more" in error.message


@pytest.mark.parametrize("frame_id", [42, ["f1"], None])
def test_an_id_that_is_not_text_is_not_echoed(frame_id: object) -> None:
    frame = {"type": "status", "id": frame_id, "seq": 1, "status": "away"}

    assert_rejected(decide(frame), "bad_frame", None)


def test_an_invalid_id_is_reported() -> None:
    error = assert_rejected(
        decide({"type": "status", "id": "has space", "seq": 1, "status": "away"}),
        "bad_frame",
        "has space",
    )
    assert "id" in error.message


# -- legacy frames --------------------------------------------------------------------------


def test_legacy_frame_publishes_status_then_progress_without_an_ack() -> None:
    decision = published(decide(legacy(user_status="away", time_end=(NOW_MS // 1000) + 900)))

    assert decision.ack_id is None
    status, progress = decision.events
    assert isinstance(status, StudentStatus) and status.status == "away"
    assert isinstance(progress, StudentProgress)
    assert (progress.question_current, progress.answered, progress.total) == (4, 3, 10)
    assert progress.time_remaining_s == 900
    for event in decision.events:
        assert (event.exam, event.attempt, event.student) == ("exam-1", "att-1", "stu-1")
        assert event.source == STUDENT_SOURCE
        assert event.ts == NOW_MS
        assert event.client_seq is None


def test_legacy_events_get_fresh_distinct_ids() -> None:
    first = published(decide(legacy()))
    second = published(decide(legacy()))
    ids = [event.id for event in first.events + second.events]

    assert len(set(ids)) == 4


def test_legacy_offline_publishes_only_progress() -> None:
    # Only the server decides a student is offline; the client saying so is still connected.
    decision = published(decide(legacy(user_status="offline")))

    assert [type(event) for event in decision.events] == [StudentProgress]


@pytest.mark.parametrize(
    ("time_end", "remaining"),
    [
        ("2024-03-01T12:10:00Z", 600),
        (NOW_MS + 61_500, 61),
        (NOW_MS // 1000 + 30, 30),
        (NOW_MS - 5_000, 0),
        (None, None),
    ],
)
def test_legacy_time_end_becomes_seconds_remaining(time_end: object, remaining: int | None) -> None:
    progress = published(decide(legacy(time_end=time_end))).events[-1]

    assert isinstance(progress, StudentProgress)
    assert progress.time_remaining_s == remaining


@pytest.mark.parametrize(
    "changes",
    [
        {"quiz_attempt_id": "att-2"},
        {"quiz_id": "exam-2"},
        {"student_id": "stu-2"},
    ],
)
def test_a_legacy_frame_naming_someone_else_is_forbidden(changes: dict[str, Any]) -> None:
    assert_rejected(decide(legacy(**changes)), "forbidden")


def test_legacy_numeric_ids_match_the_tokens_text_ids() -> None:
    who = StudentIdentity(role="student", sub="7", exam="42", attempt="4711")
    decision = published(decide(legacy(quiz_id=42, quiz_attempt_id=4711, student_id=7), who))

    assert {(e.exam, e.attempt, e.student) for e in decision.events} == {("42", "4711", "7")}


def test_a_malformed_legacy_frame_is_a_bad_frame() -> None:
    error = assert_rejected(decide(legacy(question_total=-1)), "bad_frame")
    assert "question_total" in error.message


# -- issue 9: strict numbers, fingerprints, the signed deadline --------------------------------

TIMED = StudentIdentity(
    role="student", sub="stu-1", exam="exam-1", attempt="att-1", time_end=NOW_MS + 3_600_000
)


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": "5"},
        {"seq": True},
        {"seq": 1.0},
        {"seq": 2**63},
        {"ts": 10**16},
        {"type": "submit", "score": 1e308},
        {"type": "submit", "score": 1e-200},
        {"type": "progress", "answered": 10**6, "total": 10},
        {"type": "progress", "answered": 1, "total": 10, "time_remaining_s": 10**9},
    ],
    ids=repr,
)
def test_numbers_no_view_can_store_get_bad_frame(changes: dict[str, Any]) -> None:
    frame = {"type": "status", "id": "e1", "seq": 5, "status": "away"}
    if changes.get("type", "status") != "status":
        del frame["status"]
    assert_rejected(decide({**frame, **changes}), "bad_frame", "e1")


def test_the_token_deadline_wins_over_the_pages_countdown() -> None:
    frame = {"type": "progress", "id": "p1", "seq": 1, "answered": 1, "total": 5}
    timed = published(decide({**frame, "time_remaining_s": 99_999}, TIMED)).events[0]
    untimed = published(decide({**frame, "time_remaining_s": 600})).events[0]

    assert isinstance(timed, StudentProgress) and timed.time_remaining_s is None
    assert isinstance(untimed, StudentProgress) and untimed.time_remaining_s == 600


def test_the_legacy_time_end_is_ignored_when_the_token_has_a_deadline() -> None:
    later = NOW_MS + 7 * 24 * 3_600_000
    timed = published(decide(legacy(time_end=later), TIMED)).events[-1]
    untimed = published(decide(legacy(time_end=later))).events[-1]

    assert isinstance(timed, StudentProgress) and timed.time_remaining_s is None
    assert isinstance(untimed, StudentProgress) and untimed.time_remaining_s == 7 * 24 * 3600


def test_a_far_legacy_deadline_reads_as_none_and_absurd_counts_are_refused() -> None:
    far = published(decide(legacy(time_end="2099-01-01T00:00:00Z"))).events[-1]
    assert isinstance(far, StudentProgress) and far.time_remaining_s is None
    assert_rejected(decide(legacy(question_answered=10**7)), "bad_frame")


def test_a_resend_has_the_same_fingerprint_and_a_changed_frame_another() -> None:
    frame = {"type": "submit", "id": "s1", "seq": 9, "score": 17}
    first = published(decide(frame))
    respelled = published(decide(b'{"score": 17.0, "seq": 9, "id": "s1", "type": "submit"}'))
    changed = published(decide({**frame, "score": 18}))

    assert first.fingerprint == respelled.fingerprint != changed.fingerprint
    assert first.id_scope == "att-1"


def test_commands_are_fingerprinted_per_proctor() -> None:
    frame = {"type": "announce", "id": "c1", "exam": "exam-1", "text": "hi"}
    other = ProctorIdentity(role="proctor", sub="proc-2", exams=("exam-1",))

    mine, theirs = published(decide(frame, PROCTOR)), published(decide(frame, other))
    assert mine.fingerprint != theirs.fingerprint
    assert mine.id_scope == "exam:exam-1"


def test_token_claims_the_log_cannot_hold_are_named() -> None:
    assert claims_problem(TIMED) is None and claims_problem(PROCTOR) is None
    far = TIMED.model_copy(update={"time_end": 10**15})
    many = TIMED.model_copy(update={"attempt_no": 10**6})
    assert claims_problem(far) and claims_problem(many)
