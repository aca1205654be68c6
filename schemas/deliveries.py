"""Records of the deliveries topic: the router's output, one partition per gateway slot.

A gateway consumes only its own slot's partition and fans each item out locally. A record
holds a batch of items so the router writes one record per gateway per batch of log events.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.events import ExamEvent, Id


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ForProctors(_Frozen):
    """A log event of a watched exam, for the gateway's proctors (and its live exam view)."""

    kind: Literal["for_proctors"] = "for_proctors"
    exam: Id
    partition: int = Field(ge=0)
    offset: int = Field(ge=0, description="the event's log offset: the attempt's seq")
    event: ExamEvent = Field(description="the log record value, embedded verbatim")


class ForStudents(_Frozen):
    """A proctor command for one attempt, or for every student of the exam when attempt is null."""

    kind: Literal["for_students"] = "for_students"
    exam: Id
    attempt: Id | None
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    event: ExamEvent


class WatchReady(_Frozen):
    """The router routes the exam to this slot from here on, for the partitions it names.

    ``positions`` maps each log partition the router worker owns to the offset of the last
    event it routed before the watch began (-1: none). A snapshot whose per-partition
    watermarks reach these positions, followed by the live items, misses nothing.
    """

    kind: Literal["watch_ready"] = "watch_ready"
    exam: Id
    request: Id
    positions: dict[int, int]


class RouterBeat(_Frozen):
    """A router is alive and routing these log partitions to this slot (sent every second).

    Written under the same lock as the deliveries, so it follows everything the router routed
    before it. A gateway that hears no beat for a partition its proctors watch knows their
    view is stale (router down, or the log stalled) and says so.
    """

    kind: Literal["router_beat"] = "router_beat"
    router: Id
    partitions: list[int] = Field(description="log partitions this router instance owns")
    ts: int = Field(ge=0, le=100_000_000_000_000, description="when it was sent (epoch ms)")


DeliveryItem = Annotated[
    ForProctors | ForStudents | WatchReady | RouterBeat, Field(discriminator="kind")
]


class DeliveryBatch(_Frozen):
    slot: int = Field(ge=0)
    items: list[DeliveryItem]


DELIVERY_BATCH: TypeAdapter[DeliveryBatch] = TypeAdapter(DeliveryBatch)
