"""Materialised per-attempt state, as proctors see it and as the views store it.

``AttemptState`` is what the reducer in ``domain.attempt_state`` folds the log into.
The same state lives in the Redis snapshot, in DynamoDB (first attempt only) and in
each gateway's live view of a watched exam; ``view`` is the part sent to proctors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import EpochMs, Id, OfflineReason

LiveStatus = Literal["active", "away", "offline"]


class StudentView(BaseModel):
    """One row of the proctor dashboard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exam: Id
    attempt: Id
    student: Id
    name: str = ""
    attempt_no: int = 1
    status: LiveStatus = "offline"
    submitted: bool = False
    score: float | None = None
    question_current: int | None = None
    answered: int = 0
    total: int = 0
    time_end: EpochMs | None = Field(
        default=None, description="deadline incl. extensions and pauses"
    )
    extended_s: int = 0
    paused: bool = False
    paused_at: EpochMs | None = None
    away_count: int = 0
    away_since: EpochMs | None = None
    away_ms_total: int = 0
    offline_since: EpochMs | None = None
    offline_reason: OfflineReason | None = None
    offline_count: int = 0
    gateway: int | None = Field(default=None, description="slot of the gateway holding the student")
    started_at: EpochMs | None = None
    updated_at: EpochMs | None = None
    seq: int = Field(default=-1, description="log offset of the last event applied to this attempt")
    client_seq: int = Field(
        default=0, description="the student client's counter of the last event applied"
    )


class AttemptState(BaseModel):
    """The view plus what the reducer needs to stay idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    view: StudentView
    last_client_seq: int = 0
    recent_ids: tuple[str, ...] = Field(
        default=(), description="ids of the last events applied, newest last, to drop resends"
    )
