"""The gateway's wire protocol as pure functions: a client frame in, a decision out.

No I/O and no asyncio here, so every rule about what a client may say is unit-testable
and the connection handler stays a thin adapter. Identity always comes from the verified
token (``StudentIdentity`` / ``ProctorIdentity``), never from the frame.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ValidationError

from adapters.tokens import Identity, ProctorIdentity, StudentIdentity
from schemas.events import (
    MAX_ATTEMPT_NO,
    MAX_EPOCH_MS,
    MAX_REMAINING_S,
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
    log_key,
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
    """Write these events to the log; acknowledge ``ack_id`` (if any) once Kafka has them all.

    ``fingerprint`` identifies what the client said under ``ack_id`` (see ``fingerprint``);
    legacy frames have server-made ids and none.
    """

    events: tuple[ExamEvent, ...]
    ack_id: str | None
    fingerprint: str | None = None

    @property
    def id_scope(self) -> str:
        """Where an id must be unique: the views drop repeats per attempt (exam-wide: per exam)."""
        return log_key(self.events[0]).decode()


@dataclass(frozen=True)
class ProctorCommand:
    """A proctor command that needs the attempt checked against the exam before publishing."""

    event: ExamEvent
    ack_id: str
    fingerprint: str


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

HEARTBEAT = Heartbeat()
# A heartbeat is every other frame a student sends; spelled the way the clients send it, it
# is recognised without parsing. Any other spelling takes the general path and means the same.
_PLAIN_HEARTBEATS = frozenset({b'{"type":"heartbeat"}', '{"type":"heartbeat"}'})


def reject(code: ErrorCode, message: str, frame_id: str | None = None) -> Reject:
    return Reject(ErrorFrame(code=code, message=message, id=frame_id))


def claims_problem(identity: Identity) -> str | None:
    """Why a verified token's claims cannot be written to the log, if they cannot.

    The log's bounds are tighter than the token's own schema; refusing at connect beats
    failing on the first event.
    """
    if not isinstance(identity, StudentIdentity):
        return None
    if identity.time_end is not None and identity.time_end > MAX_EPOCH_MS:
        return f"time_end is beyond {MAX_EPOCH_MS}"
    if identity.attempt_no > MAX_ATTEMPT_NO:
        return f"attempt_no is above {MAX_ATTEMPT_NO}"
    return None


def fingerprint(frame: BaseModel, sender: str) -> str:
    """What the client said under its id: a resend must match it, a reuse will not.

    Taken over the validated frame (sorted keys, nulls left out), so a resend that spells
    the same frame differently (key order, ``17`` for ``17.0``, ``null`` for a missing
    field) still matches; ``sender`` keeps two proctors' commands apart.
    """
    canonical = orjson.dumps(
        [sender, frame.model_dump(mode="json", exclude_none=True)], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def interpret(
    raw: str | bytes, identity: Identity, *, gateway: int, now_ms: int, max_frame_bytes: int
) -> Decision:
    if raw in _PLAIN_HEARTBEATS and isinstance(identity, StudentIdentity):
        return HEARTBEAT
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
        return HEARTBEAT
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
                time_remaining_s=_page_deadline(frame.time_remaining_s, who),
            )
        case AnswerFrame():
            event = StudentAnswer(**common, question=frame.question, answer=frame.answer)
        case SubmitFrame():
            event = StudentSubmitted(**common, score=frame.score)
    return Publish(events=(event,), ack_id=frame.id, fingerprint=fingerprint(frame, who.sub))


def _page_deadline(remaining_s: int | None, who: StudentIdentity) -> int | None:
    """The page's countdown goes to the log only when the signed token has no deadline.

    The LMS signs ``time_end``; a page's clock or a tampered page must not move it, and
    views fill a deadline from ``time_remaining_s`` only while they know none. Dropping the
    claim here keeps it out of the log, so no view or replay can ever prefer it.
    """
    return None if who.time_end is not None else remaining_s


def _proctor(frame: object, who: ProctorIdentity, *, gateway: int, now_ms: int) -> Decision:
    if isinstance(frame, SubscribeFrame | UnsubscribeFrame):
        if frame.exam not in who.exams:
            return reject("forbidden", f"exam {frame.exam!r} is not assigned to you")
        return Watch(frame.exam) if isinstance(frame, SubscribeFrame) else Unwatch(frame.exam)
    if not isinstance(frame, MessageFrame | AnnounceFrame | PauseFrame | ResumeFrame | ExtendFrame):
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
                fingerprint=fingerprint(frame, who.sub),
            )
        case MessageFrame():
            event = ProctorMessage(**common, attempt=frame.attempt, text=frame.text)
        case PauseFrame():
            event = ProctorPaused(**common, attempt=frame.attempt, reason=frame.reason)
        case ResumeFrame():
            event = ProctorResumed(**common, attempt=frame.attempt)
        case ExtendFrame():
            event = ProctorTimeExtended(**common, attempt=frame.attempt, seconds=frame.seconds)
    return ProctorCommand(event=event, ack_id=frame.id, fingerprint=fingerprint(frame, who.sub))


def _legacy(
    data: dict[str, object], who: StudentIdentity, *, gateway: int, now_ms: int
) -> Decision:
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
    if remaining is not None and remaining > MAX_REMAINING_S:
        # Legacy pages send far-future dates (2099) to mean "no deadline"; read them so.
        remaining = None
    events: list[ExamEvent] = []
    # Only the server decides "offline"; a legacy client claiming it is still connected.
    if quiz.user_status != "offline":
        events.append(StudentStatus(**common, id=_legacy_id(), status=quiz.user_status))
    try:
        progress = StudentProgress(
            **common,
            id=_legacy_id(),
            question_current=quiz.question_number_current,
            answered=quiz.question_answered,
            total=quiz.question_total,
            time_remaining_s=_page_deadline(remaining, who),
        )
    except ValidationError as exc:
        # The legacy model predates the log's bounds; the event's check names the field.
        return reject("bad_frame", f"legacy frame: {_describe(exc)}")
    events.append(progress)
    return Publish(events=tuple(events), ack_id=None)


def _legacy_id() -> str:
    return f"legacy-{uuid.uuid4().hex}"
