"""WebSocket frames, protocol version 1 (JSON text frames). See docs/protocol.md.

Client frames are validated against the role of the token that opened the connection;
server frames are what a client must understand. Every client frame that changes state
carries a client-chosen ``id``; the server answers it with ``ack`` (the event is in the
log) or ``error`` (it is not, and the client may resend it unchanged).
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import Count, EpochMs, ExamEvent, Id, LogTime, RemainingS, Score, Seq, Text
from schemas.views import StudentView

PROTOCOL_VERSION: Literal[1] = 1


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ClientFrame(_Frame):
    # Strict: "5", true and 1.0 are not the integer 5. Coercing them would acknowledge a
    # frame whose meaning the client did not state.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _StudentEventFrame(_ClientFrame):
    id: Id = Field(description="client-chosen, unique per attempt; reused on resend")
    seq: Seq = Field(description="client counter, increasing per attempt; at most 2**53 - 1")
    ts: LogTime | None = Field(default=None, description="client clock")


# -- student -> server ---------------------------------------------------------------------


class StatusFrame(_StudentEventFrame):
    type: Literal["status"]
    status: Literal["active", "away"]


class ProgressFrame(_StudentEventFrame):
    type: Literal["progress"]
    question_current: Count | None = None
    answered: Count
    total: Count
    time_remaining_s: RemainingS | None = Field(
        default=None,
        description="the page's remaining time; used only when the token carries no deadline",
    )


class AnswerFrame(_StudentEventFrame):
    type: Literal["answer"]
    question: Count
    answer: str = Field(max_length=4000)


class SubmitFrame(_StudentEventFrame):
    type: Literal["submit"]
    score: Score | None = None


class HeartbeatFrame(_ClientFrame):
    type: Literal["heartbeat"]


# -- proctor -> server ---------------------------------------------------------------------


class SubscribeFrame(_ClientFrame):
    type: Literal["subscribe"]
    exam: Id


class UnsubscribeFrame(_ClientFrame):
    type: Literal["unsubscribe"]
    exam: Id


class _CommandFrame(_ClientFrame):
    id: Id = Field(description="client-chosen command id; becomes the event id")
    exam: Id


class MessageFrame(_CommandFrame):
    type: Literal["message"]
    attempt: Id
    text: Text


class AnnounceFrame(_CommandFrame):
    type: Literal["announce"]
    text: Text


class PauseFrame(_CommandFrame):
    type: Literal["pause"]
    attempt: Id
    reason: str = Field(default="", max_length=500)


class ResumeFrame(_CommandFrame):
    type: Literal["resume"]
    attempt: Id


class ExtendFrame(_CommandFrame):
    type: Literal["extend"]
    attempt: Id
    seconds: int = Field(ge=1, le=24 * 3600)


StudentFrame = StatusFrame | ProgressFrame | AnswerFrame | SubmitFrame | HeartbeatFrame
ProctorFrame = (
    SubscribeFrame
    | UnsubscribeFrame
    | MessageFrame
    | AnnounceFrame
    | PauseFrame
    | ResumeFrame
    | ExtendFrame
)
ClientFrame = Annotated[StudentFrame | ProctorFrame, Field(discriminator="type")]
CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)

STUDENT_FRAME_TYPES = frozenset({"status", "progress", "answer", "submit", "heartbeat"})
PROCTOR_FRAME_TYPES = frozenset(
    {"subscribe", "unsubscribe", "message", "announce", "pause", "resume", "extend"}
)

# -- server -> client ----------------------------------------------------------------------


class StudentSession(_Frame):
    exam: Id
    attempt: Id
    student: Id
    paused: bool = False
    time_end: EpochMs | None = None
    extended_s: int = 0
    last_client_seq: int = Field(
        default=0, description="highest client seq the server has applied; resend anything above"
    )


class ProctorSession(_Frame):
    proctor: Id
    exams: list[Id]


class WelcomeFrame(_Frame):
    type: Literal["welcome"] = "welcome"
    v: Literal[1] = PROTOCOL_VERSION
    conn: Id
    role: Literal["student", "proctor"]
    heartbeat_interval_s: float
    max_frame_bytes: int
    server_time: EpochMs
    student: StudentSession | None = None
    proctor: ProctorSession | None = None


class AckFrame(_Frame):
    type: Literal["ack"] = "ack"
    id: Id


def encode_ack(frame_id: str) -> bytes:
    """``AckFrame(id=frame_id)`` on the wire, without building the model: one per event."""
    return b'{"type":"ack","id":%b}' % orjson.dumps(frame_id)


ErrorCode = Literal[
    "token_missing",
    "token_invalid",
    "token_expired",
    "token_revoked",
    "bad_json",
    "bad_frame",
    "unknown_type",
    "not_allowed",
    "forbidden",
    "unknown_attempt",
    "id_reused",
    "frame_too_large",
    "rate_limited",
    "too_many_connects",
    "unavailable",
    "snapshot_timeout",
    "slow_consumer",
    "superseded",
    "shutting_down",
]


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    id: str | None = Field(default=None, description="the offending frame's id, when it had one")
    retry_after_ms: int | None = None


class SnapshotFrame(_Frame):
    type: Literal["snapshot"] = "snapshot"
    exam: Id
    students: list[StudentView]


class UpdatesFrame(_Frame):
    type: Literal["updates"] = "updates"
    exam: Id
    students: list[StudentView] = Field(
        description="latest state per student; apply if seq is newer"
    )


class EventsFrame(_Frame):
    type: Literal["events"] = "events"
    exam: Id
    events: list[ExamEvent] = Field(
        description="alerts, proctor actions, answers, submissions, offline/online, in log order"
    )


class NoticeFrame(_Frame):
    """A proctor command delivered to a student page."""

    type: Literal["notice"] = "notice"
    event: ExamEvent


class UnsubscribedFrame(_Frame):
    type: Literal["unsubscribed"] = "unsubscribed"
    exam: Id


class ViewStatusFrame(_Frame):
    """To proctors: the live view is stale (its router or the log is silent), or live again."""

    type: Literal["view_status"] = "view_status"
    live: bool
    stale_partitions: list[int] = Field(
        description="log partitions no router has routed to this gateway lately (empty: live)"
    )
    since: int | None = Field(default=None, description="epoch ms the view went stale")


ServerFrame = Annotated[
    WelcomeFrame
    | AckFrame
    | ErrorFrame
    | SnapshotFrame
    | UpdatesFrame
    | EventsFrame
    | NoticeFrame
    | UnsubscribedFrame
    | ViewStatusFrame,
    Field(discriminator="type"),
]
SERVER_FRAME: TypeAdapter[ServerFrame] = TypeAdapter(ServerFrame)
