"""Alert rules over the exam log: pure, clock-free, re-runnable with other thresholds.

Fed the log's events in order (per attempt) plus ``tick(now_ms)``; answers with
``alert.raised`` events:

- ``offline``: on each ``student.offline`` of an attempt not yet submitted.
- ``away_too_long``: away longer than ``away_threshold_s``, once per away episode.
- ``repeated_away``: the Nth away episode within ``repeated_away_window_s``, once per crossing
  (the count must fall below N before another crossing can alert).

An away episode starts with ``student.status{away}`` and ends with ``active``, an offline
verdict or the submission. Alert ids derive from the attempt and the triggering moment, so a
re-run (audit, or a notifier redoing work after a crash) produces the same ids; alerts already
in the log (``alert.raised`` events read back) are never raised again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from domain.liveness import derived_id
from schemas.events import (
    AlertKind,
    AlertRaised,
    EventSource,
    ExamEvent,
    OfflineReason,
    StudentOffline,
    StudentStatus,
    StudentSubmitted,
)

_REASON_TEXT: dict[OfflineReason, str] = {
    "closed": "closed the exam page",
    "heartbeat_timeout": "connection lost (no heartbeat)",
    "gateway_lost": "server connection lost",
}


class AlertThresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    away_threshold_s: float = Field(
        default=30.0, gt=0, description="an away episode longer than this raises away_too_long"
    )
    repeated_away_count: int = Field(
        default=3, ge=2, description="this many away episodes within the window raise repeated_away"
    )
    repeated_away_window_s: float = Field(
        default=600.0, gt=0, description="sliding window for repeated_away"
    )


@dataclass
class _Attempt:
    exam: str
    student: str
    away_since: int | None = None
    episodes: deque[int] = field(default_factory=deque)
    over_repeat_threshold: bool = False
    submitted: bool = False
    raised: set[str] = field(default_factory=set)


class AlertRules:
    def __init__(self, thresholds: AlertThresholds, *, source_id: str) -> None:
        self._thresholds = thresholds
        self._away_ms = round(thresholds.away_threshold_s * 1000)
        self._window_ms = round(thresholds.repeated_away_window_s * 1000)
        self._source = EventSource(kind="notifier", id=source_id)
        self._attempts: dict[str, _Attempt] = {}
        self._away: dict[str, _Attempt] = {}  # attempts in an away episode not yet alerted

    def on_event(self, event: ExamEvent) -> list[AlertRaised]:
        if event.attempt is None or event.student is None:
            return []
        attempt_id = event.attempt
        att = self._attempts.get(attempt_id)
        if att is None:
            att = self._attempts[attempt_id] = _Attempt(event.exam, event.student)
        match event:
            case AlertRaised():
                att.raised.add(event.id)
                return []
            case StudentStatus(status="away"):
                return self._on_away(attempt_id, att, event.ts)
            case StudentStatus(status="active"):
                self._end_away(attempt_id, att)
            case StudentOffline():
                self._end_away(attempt_id, att)
                if not att.submitted:
                    detail = (
                        f"student {att.student} went offline: {_REASON_TEXT[event.reason]}; "
                        f"last seen {_clock(event.since)}"
                    )
                    alert = self._alert(
                        attempt_id, att, "offline", event.ts, detail, event.reason, event.since
                    )
                    return [alert] if alert else []
            case StudentSubmitted():
                att.submitted = True
                self._end_away(attempt_id, att)
        return []

    def tick(self, now_ms: int) -> list[AlertRaised]:
        alerts = []
        for attempt_id, att in list(self._away.items()):
            since = att.away_since
            if since is None or now_ms - since < self._away_ms:
                continue
            del self._away[attempt_id]
            detail = (
                f"student {att.student} has been away for over "
                f"{_seconds(self._thresholds.away_threshold_s)} (since {_clock(since)})"
            )
            alert = self._alert(attempt_id, att, "away_too_long", now_ms, detail, since)
            if alert:
                alerts.append(alert)
        return alerts

    def _on_away(self, attempt_id: str, att: _Attempt, ts: int) -> list[AlertRaised]:
        if att.submitted or att.away_since is not None:
            return []
        att.away_since = ts
        self._away[attempt_id] = att
        att.episodes.append(ts)
        while att.episodes and att.episodes[0] <= ts - self._window_ms:
            att.episodes.popleft()
        count = len(att.episodes)
        if count < self._thresholds.repeated_away_count:
            att.over_repeat_threshold = False
            return []
        if att.over_repeat_threshold:
            return []
        att.over_repeat_threshold = True
        detail = (
            f"student {att.student} went away {count} times within "
            f"{_seconds(self._thresholds.repeated_away_window_s)}"
        )
        alert = self._alert(attempt_id, att, "repeated_away", ts, detail, ts)
        return [alert] if alert else []

    def _end_away(self, attempt_id: str, att: _Attempt) -> None:
        att.away_since = None
        self._away.pop(attempt_id, None)

    def _alert(
        self, attempt_id: str, att: _Attempt, kind: AlertKind, ts: int, detail: str, *cause: object
    ) -> AlertRaised | None:
        alert_id = derived_id("alert", kind, attempt_id, *cause)
        if alert_id in att.raised:
            return None
        att.raised.add(alert_id)
        return AlertRaised(
            id=alert_id,
            exam=att.exam,
            attempt=attempt_id,
            student=att.student,
            ts=ts,
            source=self._source,
            kind=kind,
            detail=detail[:500],
        )


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
