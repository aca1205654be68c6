"""Records of the presence topic (compacted) and the heartbeat topic (short retention).

Presence holds who is connected where, keyed so compaction keeps the latest word on each
thing; every consumer reads it whole from the beginning to rebuild its maps:

- ``gw/<slot>``            GatewayUp: a gateway instance took the slot; older state of it is void.
- ``conn/<conn id>``       StudentConnection, then StudentDisconnection, then a tombstone.
- ``sub/<slot>/<exam>``    ExamWatch while proctors on the slot watch the exam; tombstone after.
- ``att/<attempt>``        AttemptLiveness: the notifier's verdict (its durable state).

Heartbeats carry ``GatewayHeartbeat`` every second from each gateway to every partition of the
heartbeat topic: the gateway is alive, and these students of the partition (by
``heartbeat_partition``) heartbeated at these times. Each notifier owns some partitions and
judges their attempts; it adds its own ``LogProbe`` to each partition it owns, so reading both
in order tells a silent gateway from a stalled log.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import EpochMs, Id, OfflineReason


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayUp(_Frozen):
    kind: Literal["gateway_up"] = "gateway_up"
    slot: int = Field(ge=0)
    instance: Id
    started_at: EpochMs
    heartbeat_interval_s: float


CloseReason = Literal["client_closed", "server_shutdown", "superseded", "error"]


class StudentConnection(_Frozen):
    kind: Literal["student_connection"] = "student_connection"
    conn: Id
    slot: int = Field(ge=0)
    instance: Id
    exam: Id
    attempt: Id
    student: Id
    opened_at: EpochMs
    heartbeat_interval_s: float


class StudentDisconnection(_Frozen):
    kind: Literal["student_disconnection"] = "student_disconnection"
    conn: Id
    slot: int = Field(ge=0)
    instance: Id
    exam: Id
    attempt: Id
    student: Id
    closed_at: EpochMs
    reason: CloseReason


class ExamWatch(_Frozen):
    kind: Literal["exam_watch"] = "exam_watch"
    slot: int = Field(ge=0)
    instance: Id
    exam: Id
    request: Id = Field(
        description="echoed in the router's WatchReady so stale replies are ignored"
    )


class AttemptLiveness(_Frozen):
    kind: Literal["attempt_liveness"] = "attempt_liveness"
    exam: Id
    attempt: Id
    student: Id
    online: bool
    since: EpochMs
    reason: OfflineReason | None = None
    slot: int | None = None


PresenceRecord = Annotated[
    GatewayUp | StudentConnection | StudentDisconnection | ExamWatch | AttemptLiveness,
    Field(discriminator="kind"),
]
PRESENCE_RECORD: TypeAdapter[PresenceRecord] = TypeAdapter(PresenceRecord)


class GatewayHeartbeat(_Frozen):
    kind: Literal["gateway_heartbeat"] = "gateway_heartbeat"
    slot: int = Field(ge=0)
    instance: Id
    ts: EpochMs
    connections: int = Field(ge=0)
    students: dict[str, EpochMs] = Field(
        default_factory=dict, description="attempt id -> when its last heartbeat frame arrived"
    )


class LogProbe(_Frozen):
    """The notifier's own mark in the heartbeat partition: the log carried a record sent then."""

    kind: Literal["log_probe"] = "log_probe"
    source: Id = Field(description="the notifier instance that wrote it")
    sent_at: EpochMs


HeartbeatRecord = Annotated[GatewayHeartbeat | LogProbe, Field(discriminator="kind")]
HEARTBEAT_RECORD: TypeAdapter[HeartbeatRecord] = TypeAdapter(HeartbeatRecord)


def decode_heartbeat(raw: bytes) -> GatewayHeartbeat | LogProbe:
    return HEARTBEAT_RECORD.validate_json(raw)


def probe_key(source: str) -> bytes:
    return f"probe/{source}".encode()


def gateway_key(slot: int) -> bytes:
    return f"gw/{slot}".encode()


def connection_key(conn: str) -> bytes:
    return f"conn/{conn}".encode()


def watch_key(slot: int, exam: str) -> bytes:
    return f"sub/{slot}/{exam}".encode()


def liveness_key(attempt: str) -> bytes:
    return f"att/{attempt}".encode()


def heartbeat_partition(attempt: str, partitions: int) -> int:
    """The heartbeat partition an attempt's liveness belongs to: the notifier that owns it
    judges the attempt (one notifier per partition at most; docs/architecture.md). Stable
    across processes and restarts, unlike ``hash()``."""
    return zlib.crc32(attempt.encode()) % partitions if partitions > 1 else 0


def split_beats(beats: Mapping[str, int], partitions: int) -> list[dict[str, int]]:
    """A gateway's beats (attempt -> last beat ms) as one share per heartbeat partition.

    Every partition gets its share, an empty one included: a gateway's silence on a
    partition must mean the gateway is gone, not that it had no students there.
    """
    shares: list[dict[str, int]] = [{} for _ in range(partitions)]
    for attempt, at in beats.items():
        shares[heartbeat_partition(attempt, partitions)][attempt] = at
    return shares


def decode_presence(raw: bytes) -> PresenceRecord:
    return PRESENCE_RECORD.validate_json(raw)
