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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION: Literal[1] = 1

# Every number in an event must survive every store and reader: DynamoDB (38 significant
# digits, magnitudes 1e-130..1e126), JSON readers in JavaScript (integers exact only up to
# 2**53 - 1) and Python. A value one store refuses would be acknowledged, logged and then
# rejected by that view forever, so the bounds are enforced where events are built.
MAX_SAFE_INT = 2**53 - 1
MAX_EPOCH_MS = 100_000_000_000_000  # year 5138; leaves room for deadline arithmetic in views
MAX_QUESTIONS = 100_000  # question numbers and counts
MAX_REMAINING_S = 366 * 24 * 3600
MAX_SCORE = 1_000_000_000.0
MIN_NONZERO_SCORE = 0.000_001  # below this a score is noise, and near 1e-130 DynamoDB refuses it
MAX_ATTEMPT_NO = 10_000
MAX_GATEWAY_SLOT = 65_535


def _storable_score(value: float) -> float:
    if 0 < value < MIN_NONZERO_SCORE:
        raise ValueError(f"a score must be 0 or at least {MIN_NONZERO_SCORE}")
    return value


Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$")]
EpochMs = Annotated[int, Field(ge=0, description="Unix time in milliseconds")]
LogTime = Annotated[
    int, Field(ge=0, le=MAX_EPOCH_MS, description="Unix time in milliseconds (before year 5138)")
]
Seq = Annotated[int, Field(ge=1, le=MAX_SAFE_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_QUESTIONS)]
RemainingS = Annotated[int, Field(ge=0, le=MAX_REMAINING_S)]
Score = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_SCORE,
        allow_inf_nan=False,
        json_schema_extra={"not": {"exclusiveMinimum": 0, "exclusiveMaximum": MIN_NONZERO_SCORE}},
    ),
    AfterValidator(_storable_score),
]
Text = Annotated[str, Field(min_length=1, max_length=2000)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSource(_Frozen):
    """Who caused the event. Identity comes from the verified token, never from a frame."""

    kind: Literal["student", "proctor", "notifier", "gateway"]
    id: Id = Field(description="student id, proctor id, or service instance id")
    gateway: int | None = Field(
        default=None, ge=0, le=MAX_GATEWAY_SLOT, description="gateway slot that received it"
    )


class _Event(_Frozen):
    v: Literal[1] = SCHEMA_VERSION
    id: Id = Field(description="unique event id; client-chosen for student events")
    exam: Id
    attempt: Id | None = Field(default=None, description="attempt id; null for exam-wide events")
    student: Id | None = None
    ts: LogTime = Field(description="server time when the gateway or service wrote it")
    client_ts: LogTime | None = Field(default=None, description="client clock, if sent")
    client_seq: Seq | None = Field(
        default=None, description="student client's own counter, for stale-update checks"
    )
    source: EventSource


# -- student -----------------------------------------------------------------------------


class StudentConnected(_Event):
    type: Literal["student.connected"] = "student.connected"
    name: str = Field(default="", max_length=200)
    attempt_no: int = Field(default=1, ge=1, le=MAX_ATTEMPT_NO)
    time_end: LogTime | None = Field(default=None, description="attempt deadline from the token")
    conn: Id
    gateway: int = Field(ge=0, le=MAX_GATEWAY_SLOT)


class StudentStatus(_Event):
    type: Literal["student.status"] = "student.status"
    status: Literal["active", "away"]


class StudentProgress(_Event):
    type: Literal["student.progress"] = "student.progress"
    question_current: Count | None = None
    answered: Count
    total: Count
    time_remaining_s: RemainingS | None = None


class StudentAnswer(_Event):
    type: Literal["student.answer"] = "student.answer"
    question: Count
    answer: str = Field(max_length=4000)


class StudentSubmitted(_Event):
    type: Literal["student.submitted"] = "student.submitted"
    score: Score | None = None


OfflineReason = Literal["closed", "heartbeat_timeout", "gateway_lost"]


class StudentOffline(_Event):
    type: Literal["student.offline"] = "student.offline"
    reason: OfflineReason
    since: LogTime = Field(description="when the student was last seen")


class StudentBackOnline(_Event):
    type: Literal["student.back_online"] = "student.back_online"
    offline_ms: int = Field(ge=0, le=MAX_SAFE_INT)
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
