"""Settings of the audit tool (``PROCTOR_AUDIT__*``), beside the shared ones."""

from __future__ import annotations

from pydantic import BaseModel, Field

from adapters.settings import CommonSettings


class AuditSettings(BaseModel):
    client_id: str = Field(default="proctor-audit", description="Kafka client id")
    timezone: str = Field(
        default="UTC", description="exam time zone (IANA name) when --tz is not given"
    )
    clock_slack_ms: int = Field(
        default=300_000,
        ge=0,
        description=(
            "how far a record's Kafka timestamp may differ from the event's ts: time-based "
            "offset lookups start this much earlier and stop this much later"
        ),
    )
    fetch_max_records: int = Field(default=5000, ge=1, description="records per getmany")
    alert_tick_ms: int = Field(
        default=1000, ge=1, description="clock step when re-running alert rules over history"
    )


class Settings(CommonSettings):
    audit: AuditSettings = AuditSettings()
