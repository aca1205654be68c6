"""Notifier settings (``PROCTOR_NOTIFIER__*``, e.g. ``PROCTOR_NOTIFIER__GATEWAY_TIMEOUT_S``;
alert thresholds nest once more: ``PROCTOR_NOTIFIER__ALERTS__AWAY_THRESHOLD_S``)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from adapters.settings import CommonSettings
from domain.alerts import AlertThresholds
from domain.liveness import LivenessConfig


class NotifierOptions(BaseModel):
    instance: str = Field(
        default_factory=lambda: f"notifier-{uuid.uuid4().hex[:12]}",
        description="this process's identity (source.id of the events it writes)",
    )
    group_id: str = Field(default="notifier", description="consumer group on the event log")
    gateway_timeout_s: float = Field(
        default=3.0, gt=0, description="a gateway silent this long has lost its students"
    )
    heartbeat_misses: int = Field(
        default=2, ge=1, description="missed heartbeat intervals before heartbeat_timeout"
    )
    reconnect_grace_s: float = Field(
        default=5.0, ge=0, description="wait after a server_shutdown close before offline(closed)"
    )
    tick_interval_s: float = Field(
        default=0.2, gt=0, description="how often deadlines are checked when nothing arrives"
    )
    batch_slack_s: float = Field(
        default=0.2,
        ge=0,
        description="a gateway batch cut this close before a heartbeat deadline proves a miss",
    )
    default_heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="for attempts whose connection record was compacted away"
    )
    probe_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="how often the notifier marks the heartbeat partition to see the log flow",
    )
    log_stall_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "a probe this late means the log stalled: verdicts inferred from silence wait, and"
            " every gateway and student gets a fresh window once it flows again"
        ),
    )
    flap_window_s: float = Field(
        default=60.0,
        ge=0,
        description="a close this soon after the attempt's last offline verdict waits the grace",
    )
    reemit_window_s: float = Field(
        default=120.0,
        ge=0,
        description="offline verdicts written this long before a restart re-issue their events",
    )
    alerts: AlertThresholds = Field(default_factory=AlertThresholds, description="alert rules")
    alerts_lookback_s: float = Field(
        default=900.0,
        ge=0,
        description="log history re-read on start to rebuild the alert rules' state",
    )
    alerts_fetch_min_bytes: int = Field(
        default=32_768,
        ge=1,
        description=(
            "the broker holds a log fetch for the alert rules until this much has gathered (or"
            " tick_interval_s): fewer, fuller fetches; alerts tolerate the delay"
        ),
    )
    commit_interval_s: float = Field(
        default=1.0,
        ge=0,
        description=(
            "how often the alerts consumer commits its offsets (0: after every batch); a restart"
            " re-reads at most this much and raises the same alert ids again"
        ),
    )
    write_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "how long a write waits before it is logged and counted as slow; it keeps waiting"
            " (a stalled log must not stop the notifier)"
        ),
    )
    startup_timeout_s: float = Field(
        default=120.0, gt=0, description="bound on replaying presence and heartbeats on start"
    )
    ops_host: str = Field(default="127.0.0.1", description="ops server address")
    ops_port: int = Field(default=9103, ge=0, description="ops server port (0: any free port)")

    def liveness(self) -> LivenessConfig:
        return LivenessConfig(
            gateway_timeout_ms=round(self.gateway_timeout_s * 1000),
            heartbeat_misses=self.heartbeat_misses,
            reconnect_grace_ms=round(self.reconnect_grace_s * 1000),
            batch_slack_ms=round(self.batch_slack_s * 1000),
            default_heartbeat_interval_ms=round(self.default_heartbeat_interval_s * 1000),
            probe_interval_ms=round(self.probe_interval_s * 1000),
            log_stall_ms=round(self.log_stall_s * 1000),
            flap_window_ms=round(self.flap_window_s * 1000),
            reemit_window_ms=round(self.reemit_window_s * 1000),
        )


class NotifierSettings(CommonSettings):
    notifier: NotifierOptions = Field(default_factory=NotifierOptions)
