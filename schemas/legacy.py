"""The seed's legacy student frame (paper 001, Figure 4), accepted beside our own frames.

    {"type": "message_to_master", "clientConnectionSocketId": "...",
     "message": {"action": "lmsQuizMonitoringStudent", "data": {...}}}

Legacy clients neither number nor resend their frames and expect no acks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LEGACY_TYPE = "message_to_master"


class LegacyQuizData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    quiz_id: str
    quiz_attempt_id: str
    student_id: str
    user_status: Literal["active", "away", "offline"]
    question_answered: int = Field(default=0, ge=0)
    question_total: int = Field(default=0, ge=0)
    question_number_current: int | None = Field(default=None, ge=0)
    quiz_participant_id: str | None = None
    quiz_result_id: str | None = None
    score: float | None = None
    student_name: str | None = None
    time_end: int | None = Field(
        default=None, description="epoch ms (ISO 8601 and seconds accepted)"
    )
    time_start: int | None = None
    topic_uuid: str | None = None

    @field_validator(
        "quiz_id", "quiz_attempt_id", "student_id", mode="before", json_schema_input_type=str | int
    )
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator(
        "time_end", "time_start", mode="before", json_schema_input_type=int | float | str | None
    )
    @classmethod
    def _epoch_ms(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                # Read a zone-less time as UTC, so every gateway computes the same deadline.
                moment = moment.replace(tzinfo=UTC)
            return int(moment.timestamp() * 1000)
        number = int(value) if isinstance(value, (str, float)) else value
        # Seconds and milliseconds are both seen in the wild; 1e11 s is the year 5138.
        if isinstance(number, int) and number < 100_000_000_000:
            return number * 1000
        return number


class LegacyMessage(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    action: Literal["lmsQuizMonitoringStudent"]
    data: LegacyQuizData


class LegacyFrame(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["message_to_master"]
    clientConnectionSocketId: str | None = None
    message: LegacyMessage
