"""Records of the exam event log (Kafka topic ``exam.events``), schema version 1.

The log is the system of record: every other store is a view rebuilt from it.
Each record's key is the attempt id (``exam:<exam id>`` for exam-wide events),
so all events of one attempt live in one partition, in order. The record's
offset in that partition is the attempt's sequence number (``seq``): strictly
increasing per attempt, identical on every replay. ``id`` is unique per event;
for student events the client chooses it and resends reuse it, which is how
consumers drop duplicates.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION: Literal[1] = 1

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$")]
EpochMs = Annotated[int, Field(ge=0, description="Unix time in milliseconds")]
Text = Annotated[str, Field(min_length=1, max_length=2000)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSource(_Frozen):
    """Who caused the event. Identity comes from the verified token, never from a frame."""

    kind: Literal["student", "proctor", "notifier", "gateway"]
    id: Id = Field(description="student id, proctor id, or service instance id")
    gateway: int | None = Field(default=None, description="gateway slot that received it")


class _Event(_Frozen):
    v: Literal[1] = SCHEMA_VERSION
    id: Id = Field(description="unique event id; client-chosen for student events")
    exam: Id
    attempt: Id | None = Field(default=None, description="attempt id; null for exam-wide events")
    student: Id | None = None
    ts: EpochMs = Field(description="server time when the gateway or service wrote it")
    client_ts: EpochMs | None = Field(default=None, description="client clock, if sent")
    client_seq: int | None = Field(
        default=None, ge=1, description="student client's own counter, for stale-update checks"
    )
    source: EventSource


# -- student -----------------------------------------------------------------------------


class StudentConnected(_Event):
    type: Literal["student.connected"] = "student.connected"
    name: str = Field(default="", max_length=200)
    attempt_no: int = Field(default=1, ge=1)
    time_end: EpochMs | None = Field(default=None, description="attempt deadline from the token")
    conn: Id
    gateway: int = Field(ge=0)


class StudentStatus(_Event):
    type: Literal["student.status"] = "student.status"
    status: Literal["active", "away"]


class StudentProgress(_Event):
    type: Literal["student.progress"] = "student.progress"
    question_current: int | None = Field(default=None, ge=0)
    answered: int = Field(ge=0)
    total: int = Field(ge=0)
    time_remaining_s: int | None = Field(default=None, ge=0)


class StudentAnswer(_Event):
    type: Literal["student.answer"] = "student.answer"
    question: int = Field(ge=0)
    answer: str = Field(max_length=4000)


class StudentSubmitted(_Event):
    type: Literal["student.submitted"] = "student.submitted"
    score: float | None = None


OfflineReason = Literal["closed", "heartbeat_timeout", "gateway_lost"]


class StudentOffline(_Event):
    type: Literal["student.offline"] = "student.offline"
    reason: OfflineReason
    since: EpochMs = Field(description="when the student was last seen")


class StudentBackOnline(_Event):
    type: Literal["student.back_online"] = "student.back_online"
    offline_ms: int = Field(ge=0)
    reason: OfflineReason = Field(description="why the student had been offline")


# -- proctor -----------------------------------------------------------------------------


class ProctorMessage(_Event):
    type: Literal["proctor.message"] = "proctor.message"
    text: Text


class ProctorAnnouncement(_Event):
    type: Literal["proctor.announcement"] = "proctor.announcement"
    text: Text


class ProctorPaused(_Event):
    type: Literal["proctor.paused"] = "proctor.paused"
    reason: str = Field(default="", max_length=500)


class ProctorResumed(_Event):
    type: Literal["proctor.resumed"] = "proctor.resumed"


class ProctorTimeExtended(_Event):
    type: Literal["proctor.time_extended"] = "proctor.time_extended"
    seconds: int = Field(ge=1, le=24 * 3600)


# -- notifier ----------------------------------------------------------------------------

AlertKind = Literal["offline", "away_too_long", "repeated_away"]


class AlertRaised(_Event):
    type: Literal["alert.raised"] = "alert.raised"
    kind: AlertKind
    detail: str = Field(max_length=500)


ExamEvent = Annotated[
    StudentConnected
    | StudentStatus
    | StudentProgress
    | StudentAnswer
    | StudentSubmitted
    | StudentOffline
    | StudentBackOnline
    | ProctorMessage
    | ProctorAnnouncement
    | ProctorPaused
    | ProctorResumed
    | ProctorTimeExtended
    | AlertRaised,
    Field(discriminator="type"),
]

EXAM_EVENT: TypeAdapter[ExamEvent] = TypeAdapter(ExamEvent)

# Commands a proctor issues that the student's page must receive.
STUDENT_FACING = (
    ProctorMessage,
    ProctorAnnouncement,
    ProctorPaused,
    ProctorResumed,
    ProctorTimeExtended,
)


def log_key(event: ExamEvent) -> bytes:
    """Partition key: the attempt, or the exam for exam-wide events."""
    return (event.attempt or f"exam:{event.exam}").encode()


def decode_event(raw: bytes) -> ExamEvent:
    return EXAM_EVENT.validate_json(raw)


def encode_event(event: ExamEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()
