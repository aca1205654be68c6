"""WebSocket frames: the type tag, what clients may say, and server frames parsing back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from schemas.events import EventSource, ProctorAnnouncement, ProctorMessage, StudentAnswer
from schemas.frames import (
    CLIENT_FRAME,
    PROCTOR_FRAME_TYPES,
    SERVER_FRAME,
    STUDENT_FRAME_TYPES,
    AckFrame,
    AnnounceFrame,
    AnswerFrame,
    ErrorFrame,
    EventsFrame,
    ExtendFrame,
    HeartbeatFrame,
    MessageFrame,
    NoticeFrame,
    PauseFrame,
    ProctorSession,
    ProgressFrame,
    ResumeFrame,
    ServerFrame,
    SnapshotFrame,
    StatusFrame,
    StudentSession,
    SubmitFrame,
    SubscribeFrame,
    UnsubscribedFrame,
    UnsubscribeFrame,
    UpdatesFrame,
    WelcomeFrame,
    encode_ack,
)
from schemas.views import StudentView

VALID_CLIENT_FRAMES: dict[str, dict[str, Any]] = {
    "status": {"type": "status", "id": "f1", "seq": 1, "status": "away", "ts": 5},
    "progress": {"type": "progress", "id": "f2", "seq": 2, "answered": 3, "total": 10},
    "answer": {"type": "answer", "id": "f3", "seq": 3, "question": 2, "answer": "B"},
    "submit": {"type": "submit", "id": "f4", "seq": 4, "score": 9.5},
    "heartbeat": {"type": "heartbeat"},
    "subscribe": {"type": "subscribe", "exam": "exam-1"},
    "unsubscribe": {"type": "unsubscribe", "exam": "exam-1"},
    "message": {"type": "message", "id": "c1", "exam": "exam-1", "attempt": "a1", "text": "hi"},
    "announce": {"type": "announce", "id": "c2", "exam": "exam-1", "text": "10 min left"},
    "pause": {"type": "pause", "id": "c3", "exam": "exam-1", "attempt": "a1"},
    "resume": {"type": "resume", "id": "c4", "exam": "exam-1", "attempt": "a1"},
    "extend": {"type": "extend", "id": "c5", "exam": "exam-1", "attempt": "a1", "seconds": 60},
}


def client_errors(frame: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        CLIENT_FRAME.validate_python(frame)
    return [(".".join(str(p) for p in e["loc"]), e["type"]) for e in caught.value.errors()]


def test_frame_type_sets_partition_the_client_frames() -> None:
    assert STUDENT_FRAME_TYPES | PROCTOR_FRAME_TYPES == set(VALID_CLIENT_FRAMES)
    assert not STUDENT_FRAME_TYPES & PROCTOR_FRAME_TYPES


@pytest.mark.parametrize(
    ("frame_type", "model"),
    [
        ("status", StatusFrame),
        ("progress", ProgressFrame),
        ("answer", AnswerFrame),
        ("submit", SubmitFrame),
        ("heartbeat", HeartbeatFrame),
        ("subscribe", SubscribeFrame),
        ("unsubscribe", UnsubscribeFrame),
        ("message", MessageFrame),
        ("announce", AnnounceFrame),
        ("pause", PauseFrame),
        ("resume", ResumeFrame),
        ("extend", ExtendFrame),
    ],
)
def test_the_type_tag_picks_the_frame_model(frame_type: str, model: type[BaseModel]) -> None:
    frame = CLIENT_FRAME.validate_json(orjson.dumps(VALID_CLIENT_FRAMES[frame_type]))

    assert type(frame) is model
    assert frame.type == frame_type


def test_unknown_frame_type_is_rejected_by_the_tag() -> None:
    assert client_errors({"type": "teleport"}) == [("", "union_tag_invalid")]


@pytest.mark.parametrize("frame_type", sorted(STUDENT_FRAME_TYPES - {"heartbeat"}))
def test_a_student_frame_has_no_field_to_name_an_attempt_exam_or_student(frame_type: str) -> None:
    for field in ("attempt", "exam", "student"):
        frame = {**VALID_CLIENT_FRAMES[frame_type], field: "someone-else"}

        assert client_errors(frame) == [(f"{frame_type}.{field}", "extra_forbidden")]


def test_heartbeat_carries_nothing_else() -> None:
    assert client_errors({"type": "heartbeat", "id": "x"}) == [("heartbeat.id", "extra_forbidden")]


@pytest.mark.parametrize(
    ("changes", "where", "error"),
    [
        ({"seq": 0}, "seq", "greater_than_equal"),
        ({"seq": -1}, "seq", "greater_than_equal"),
        ({"ts": -1}, "ts", "greater_than_equal"),
        ({"id": ""}, "id", "string_too_short"),
        ({"id": "a b"}, "id", "string_pattern_mismatch"),
        ({"status": "offline"}, "status", "literal_error"),
    ],
)
def test_bad_student_fields_are_named(changes: dict[str, Any], where: str, error: str) -> None:
    frame = {**VALID_CLIENT_FRAMES["status"], **changes}

    assert client_errors(frame) == [(f"status.{where}", error)]


def test_student_event_frames_need_an_id_and_a_seq() -> None:
    assert sorted(client_errors({"type": "status", "status": "away"})) == [
        ("status.id", "missing"),
        ("status.seq", "missing"),
    ]


def test_negative_progress_is_rejected() -> None:
    frame = {**VALID_CLIENT_FRAMES["progress"], "answered": -1}

    assert client_errors(frame) == [("progress.answered", "greater_than_equal")]


@pytest.mark.parametrize("seconds", [0, -60, 86_401])
def test_extension_must_be_between_one_second_and_a_day(seconds: int) -> None:
    frame = {**VALID_CLIENT_FRAMES["extend"], "seconds": seconds}

    assert [where for where, _ in client_errors(frame)] == ["extend.seconds"]


def test_announcements_are_exam_wide_and_name_no_attempt() -> None:
    frame = {**VALID_CLIENT_FRAMES["announce"], "attempt": "a1"}

    assert client_errors(frame) == [("announce.attempt", "extra_forbidden")]


def test_proctor_commands_need_an_attempt() -> None:
    frame = dict(VALID_CLIENT_FRAMES["message"])
    del frame["attempt"]

    assert client_errors(frame) == [("message.attempt", "missing")]


def test_client_frames_are_immutable() -> None:
    frame = CLIENT_FRAME.validate_python(VALID_CLIENT_FRAMES["subscribe"])
    assert isinstance(frame, SubscribeFrame)
    with pytest.raises(ValidationError):
        frame.exam = "other"  # type: ignore[misc]


# -- server frames ---------------------------------------------------------------------------

VIEW = StudentView(exam="exam-1", attempt="a1", student="s1", status="active", seq=17)
PROCTOR = EventSource(kind="proctor", id="proc-1", gateway=2)


def server_samples() -> list[ServerFrame]:
    return [
        WelcomeFrame(
            conn="conn-1",
            role="student",
            heartbeat_interval_s=5.0,
            max_frame_bytes=65536,
            server_time=1_700_000_000_000,
            student=StudentSession(exam="exam-1", attempt="a1", student="s1", last_client_seq=3),
        ),
        WelcomeFrame(
            conn="conn-2",
            role="proctor",
            heartbeat_interval_s=5.0,
            max_frame_bytes=65536,
            server_time=1_700_000_000_000,
            proctor=ProctorSession(proctor="proc-1", exams=["exam-1", "exam-2"]),
        ),
        AckFrame(id="f1"),
        ErrorFrame(code="rate_limited", message="slow down", id="f2", retry_after_ms=250),
        SnapshotFrame(exam="exam-1", students=[VIEW]),
        UpdatesFrame(exam="exam-1", students=[VIEW]),
        EventsFrame(
            exam="exam-1",
            events=[
                StudentAnswer(
                    id="e1",
                    exam="exam-1",
                    attempt="a1",
                    student="s1",
                    ts=5,
                    source=EventSource(kind="student", id="s1"),
                    question=1,
                    answer="A",
                )
            ],
        ),
        NoticeFrame(
            event=ProctorMessage(
                id="m1", exam="exam-1", attempt="a1", ts=5, source=PROCTOR, text="hello"
            )
        ),
        NoticeFrame(
            event=ProctorAnnouncement(
                id="m2", exam="exam-1", attempt=None, ts=5, source=PROCTOR, text="to everyone"
            )
        ),
        UnsubscribedFrame(exam="exam-1"),
    ]


@pytest.mark.parametrize("frame", server_samples(), ids=lambda f: f.type)
def test_server_frames_as_the_gateway_sends_them_parse_back(frame: ServerFrame) -> None:
    # The gateway leaves nulls out of what it sends; a client must still read every frame.
    raw = frame.model_dump_json(exclude_none=True)

    assert SERVER_FRAME.validate_json(raw) == frame


@pytest.mark.parametrize("frame_id", ["f1", "att-17-1-59-0b7d44", "a.b:c@d_e-F", "x" * 128])
def test_the_hand_encoded_ack_is_the_ack_frame(frame_id: str) -> None:
    raw = encode_ack(frame_id)

    assert SERVER_FRAME.validate_json(raw) == AckFrame(id=frame_id)
    assert orjson.loads(raw) == orjson.loads(AckFrame(id=frame_id).model_dump_json())


def test_server_frames_carry_their_type_without_being_told() -> None:
    assert orjson.loads(AckFrame(id="f1").model_dump_json())["type"] == "ack"
    error = ErrorFrame(code="bad_json", message="x")
    assert orjson.loads(error.model_dump_json())["type"] == "error"


def test_unknown_error_code_is_rejected() -> None:
    with pytest.raises(ValidationError):
        ErrorFrame.model_validate({"code": "oops", "message": "x"})


def test_welcome_announces_protocol_version_one() -> None:
    welcome = server_samples()[0]

    assert orjson.loads(welcome.model_dump_json())["v"] == 1


# -- storable numbers and strict types (issue 9) ---------------------------------------------

MAX_SAFE = 2**53 - 1


@pytest.mark.parametrize(
    ("frame_type", "changes", "where", "error"),
    [
        ("status", {"seq": "5"}, "seq", "int_type"),
        ("status", {"seq": True}, "seq", "int_type"),
        ("status", {"seq": 1.0}, "seq", "int_type"),
        ("status", {"seq": 2**63}, "seq", "less_than_equal"),
        ("status", {"seq": MAX_SAFE + 1}, "seq", "less_than_equal"),
        ("status", {"ts": 10**17}, "ts", "less_than_equal"),
        ("status", {"ts": "5"}, "ts", "int_type"),
        ("progress", {"answered": 100_001}, "answered", "less_than_equal"),
        ("progress", {"total": 10**20}, "total", "less_than_equal"),
        ("progress", {"question_current": 2.0}, "question_current", "int_type"),
        ("progress", {"time_remaining_s": 366 * 86400 + 1}, "time_remaining_s", "less_than_equal"),
        ("answer", {"question": 10**9}, "question", "less_than_equal"),
        ("submit", {"score": 1e308}, "score", "less_than_equal"),
        ("submit", {"score": 1e-200}, "score", "value_error"),
        ("submit", {"score": -0.5}, "score", "greater_than_equal"),
        ("submit", {"score": "17"}, "score", "float_type"),
        ("submit", {"score": True}, "score", "float_type"),
        ("extend", {"seconds": 60.0}, "seconds", "int_type"),
        ("extend", {"seconds": "60"}, "seconds", "int_type"),
    ],
)
def test_numbers_are_strict_and_storable_everywhere(
    frame_type: str, changes: dict[str, Any], where: str, error: str
) -> None:
    frame = {**VALID_CLIENT_FRAMES[frame_type], **changes}

    assert client_errors(frame) == [(f"{frame_type}.{where}", error)]


@pytest.mark.parametrize(
    ("frame_type", "changes"),
    [
        ("status", {"seq": MAX_SAFE}),
        ("submit", {"score": 0}),
        ("submit", {"score": 17}),
        ("submit", {"score": 0.000001}),
        ("submit", {"score": 1e9}),
        ("submit", {"score": 33.333333333333336}),
        ("progress", {"answered": 100_000, "total": 100_000, "time_remaining_s": 366 * 86400}),
    ],
)
def test_the_bounds_themselves_are_accepted(frame_type: str, changes: dict[str, Any]) -> None:
    CLIENT_FRAME.validate_json(orjson.dumps({**VALID_CLIENT_FRAMES[frame_type], **changes}))


def test_the_exported_json_schema_carries_the_bounds() -> None:
    schema = StatusFrame.model_json_schema()["properties"]["seq"]
    submit = SubmitFrame.model_json_schema()["properties"]["score"]["anyOf"][0]

    assert (schema["minimum"], schema["maximum"]) == (1, MAX_SAFE)
    assert (submit["minimum"], submit["maximum"]) == (0, 1e9)
    assert submit["not"] == {"exclusiveMinimum": 0, "exclusiveMaximum": 0.000001}
