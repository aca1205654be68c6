"""The gateway's wire protocol as pure functions: a client frame in, a decision out.

No I/O and no asyncio here, so every rule about what a client may say is unit-testable
and the connection handler stays a thin adapter. Identity always comes from the verified
token (``StudentIdentity`` / ``ProctorIdentity``), never from the frame.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from adapters.tokens import Identity, ProctorIdentity, StudentIdentity
from schemas.events import (
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    ProctorPaused,
    ProctorResumed,
    ProctorTimeExtended,
    StudentAnswer,
    StudentProgress,
    StudentStatus,
    StudentSubmitted,
)
from schemas.frames import (
    CLIENT_FRAME,
    PROCTOR_FRAME_TYPES,
    STUDENT_FRAME_TYPES,
    AnnounceFrame,
    AnswerFrame,
    ErrorCode,
    ErrorFrame,
    ExtendFrame,
    HeartbeatFrame,
    MessageFrame,
    PauseFrame,
    ProgressFrame,
    ResumeFrame,
    StatusFrame,
    SubmitFrame,
    SubscribeFrame,
    UnsubscribeFrame,
)
from schemas.legacy import LEGACY_TYPE, LegacyFrame


@dataclass(frozen=True)
class Publish:
    """Write these events to the log; acknowledge ``ack_id`` (if any) once Kafka has them all."""

    events: tuple[ExamEvent, ...]
    ack_id: str | None


@dataclass(frozen=True)
class ProctorCommand:
    """A proctor command that needs the attempt checked against the exam before publishing."""

    event: ExamEvent
    ack_id: str


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Watch:
    exam: str


@dataclass(frozen=True)
class Unwatch:
    exam: str


@dataclass(frozen=True)
class Reject:
    error: ErrorFrame


Decision = Publish | ProctorCommand | Heartbeat | Watch | Unwatch | Reject


def reject(code: ErrorCode, message: str, frame_id: str | None = None) -> Reject:
    return Reject(ErrorFrame(code=code, message=message, id=frame_id))


def interpret(
    raw: str | bytes, identity: Identity, *, gateway: int, now_ms: int, max_frame_bytes: int
) -> Decision:
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_frame_bytes:
        return reject("frame_too_large", f"frame of {size} bytes exceeds {max_frame_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return reject("bad_json", f"not JSON: {exc}")
    if not isinstance(data, dict):
        return reject("bad_frame", "a frame must be a JSON object")
    frame_type = data.get("type")
    frame_id = data.get("id") if isinstance(data.get("id"), str) else None
    if frame_type == LEGACY_TYPE:
        if not isinstance(identity, StudentIdentity):
            return reject("not_allowed", "legacy frames are for students")
        return _legacy(data, identity, gateway=gateway, now_ms=now_ms)
    known = STUDENT_FRAME_TYPES | PROCTOR_FRAME_TYPES
    if not isinstance(frame_type, str) or frame_type not in known:
        return reject("unknown_type", f"unknown frame type {frame_type!r}", frame_id)
    allowed = STUDENT_FRAME_TYPES if isinstance(identity, StudentIdentity) else PROCTOR_FRAME_TYPES
    if frame_type not in allowed:
        return reject("not_allowed", f"{frame_type!r} is not for a {identity.role}", frame_id)
    try:
        frame = CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        return reject("bad_frame", _describe(exc), frame_id)
    if isinstance(identity, StudentIdentity):
        return _student(frame, identity, gateway=gateway, now_ms=now_ms)
    return _proctor(frame, identity, gateway=gateway, now_ms=now_ms)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "frame"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _student(frame: object, who: StudentIdentity, *, gateway: int, now_ms: int) -> Decision:
    if isinstance(frame, HeartbeatFrame):
        return Heartbeat()
    if not isinstance(frame, StatusFrame | ProgressFrame | AnswerFrame | SubmitFrame):
        return reject("not_allowed", "not a student frame")
    common = {
        "id": frame.id,
        "exam": who.exam,
        "attempt": who.attempt,
        "student": who.sub,
        "ts": now_ms,
        "client_ts": frame.ts,
        "client_seq": frame.seq,
        "source": EventSource(kind="student", id=who.sub, gateway=gateway),
    }
    event: ExamEvent
    match frame:
        case StatusFrame():
            event = StudentStatus(**common, status=frame.status)
        case ProgressFrame():
            event = StudentProgress(
                **common,
                question_current=frame.question_current,
                answered=frame.answered,
                total=frame.total,
                time_remaining_s=frame.time_remaining_s,
            )
        case AnswerFrame():
            event = StudentAnswer(**common, question=frame.question, answer=frame.answer)
        case SubmitFrame():
            event = StudentSubmitted(**common, score=frame.score)
    return Publish(events=(event,), ack_id=frame.id)


def _proctor(frame: object, who: ProctorIdentity, *, gateway: int, now_ms: int) -> Decision:
    if isinstance(frame, SubscribeFrame | UnsubscribeFrame):
        if frame.exam not in who.exams:
            return reject("forbidden", f"exam {frame.exam!r} is not assigned to you")
        return Watch(frame.exam) if isinstance(frame, SubscribeFrame) else Unwatch(frame.exam)
    if not isinstance(
        frame, MessageFrame | AnnounceFrame | PauseFrame | ResumeFrame | ExtendFrame
    ):
        return reject("not_allowed", "not a proctor frame")
    if frame.exam not in who.exams:
        return reject("forbidden", f"exam {frame.exam!r} is not assigned to you", frame.id)
    common = {
        "id": frame.id,
        "exam": frame.exam,
        "ts": now_ms,
        "source": EventSource(kind="proctor", id=who.sub, gateway=gateway),
    }
    event: ExamEvent
    match frame:
        case AnnounceFrame():
            return Publish(
                events=(ProctorAnnouncement(**common, attempt=None, text=frame.text),),
                ack_id=frame.id,
            )
        case MessageFrame():
            event = ProctorMessage(**common, attempt=frame.attempt, text=frame.text)
        case PauseFrame():
            event = ProctorPaused(**common, attempt=frame.attempt, reason=frame.reason)
        case ResumeFrame():
            event = ProctorResumed(**common, attempt=frame.attempt)
        case ExtendFrame():
            event = ProctorTimeExtended(**common, attempt=frame.attempt, seconds=frame.seconds)
    return ProctorCommand(event=event, ack_id=frame.id)


def _legacy(data: dict[str, object], who: StudentIdentity, *, gateway: int, now_ms: int) -> Decision:
    try:
        legacy = LegacyFrame.model_validate(data)
    except ValidationError as exc:
        return reject("bad_frame", f"legacy frame: {_describe(exc)}")
    quiz = legacy.message.data
    if (quiz.quiz_id, quiz.quiz_attempt_id, quiz.student_id) != (who.exam, who.attempt, who.sub):
        return reject("forbidden", "the frame names another exam, attempt or student")
    common = {
        "exam": who.exam,
        "attempt": who.attempt,
        "student": who.sub,
        "ts": now_ms,
        "source": EventSource(kind="student", id=who.sub, gateway=gateway),
    }
    remaining = None if quiz.time_end is None else max(0, (quiz.time_end - now_ms) // 1000)
    events: list[ExamEvent] = []
    # Only the server decides "offline"; a legacy client claiming it is still connected.
    if quiz.user_status != "offline":
        events.append(StudentStatus(**common, id=_legacy_id(), status=quiz.user_status))
    events.append(
        StudentProgress(
            **common,
            id=_legacy_id(),
            question_current=quiz.question_number_current,
            answered=quiz.question_answered,
            total=quiz.question_total,
            time_remaining_s=remaining,
        )
    )
    return Publish(events=tuple(events), ack_id=None)


def _legacy_id() -> str:
    return f"legacy-{uuid.uuid4().hex}"
