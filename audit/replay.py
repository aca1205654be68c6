"""Folding the log again, with the services' own rules: states, first attempts, alerts.

``ExamFold`` feeds every decodable event of the exam to the one reducer at its offset, exactly
as the status service does (the reducer itself drops replays and resends), so its states are
the ones the status service stores. ``first_attempts`` applies the DynamoDB item rule.
``AlertReplay`` re-runs ``domain.alerts`` with other thresholds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.alerts import AlertRules, AlertThresholds
from domain.attempt_state import apply
from domain.first_attempt import supersedes
from schemas.events import AlertRaised, ExamEvent
from schemas.views import AttemptState, StudentView


class ExamFold:
    """Per-attempt states of one exam; feed each partition's events in offset order."""

    def __init__(self) -> None:
        self.states: dict[str, AttemptState] = {}

    def feed(self, event: ExamEvent, offset: int) -> None:
        if event.attempt is None:
            return
        new = apply(self.states.get(event.attempt), event, offset)
        if new is not None:
            self.states[event.attempt] = new

    def views(self) -> list[StudentView]:
        return sorted(
            (s.view for s in self.states.values()),
            key=lambda v: (v.student, v.attempt_no, v.attempt),
        )


def first_attempts(views: Iterable[StudentView]) -> dict[str, StudentView]:
    """Per student, the view the DynamoDB item must hold (``domain.first_attempt`` rule)."""
    holders: dict[str, StudentView] = {}
    for view in views:
        if supersedes(view, holders.get(view.student)):
            holders[view.student] = view
    return holders


@dataclass(frozen=True)
class Incident:
    alert: AlertRaised
    raised_live: bool  # the same alert (same derived id) is in the log


class AlertReplay:
    """The alert rules over history: one rule set per partition, its clock stepping in
    ``tick_ms`` up to each event's ts, like the notifier's periodic tick in real time."""

    def __init__(self, thresholds: AlertThresholds, *, tick_ms: int = 1000) -> None:
        self._thresholds = thresholds
        self._tick_ms = tick_ms
        self._rules: dict[int, AlertRules] = {}
        self._clock: dict[int, int] = {}
        self._found: list[AlertRaised] = []
        self.live_ids: set[str] = set()
        self.live_alerts = 0

    def feed(self, partition: int, event: ExamEvent) -> None:
        if isinstance(event, AlertRaised):
            # What the notifier raised then; the replay must not be silenced by it.
            self.live_ids.add(event.id)
            self.live_alerts += 1
            return
        rules = self._rules.get(partition)
        if rules is None:
            rules = self._rules[partition] = AlertRules(self._thresholds, source_id="audit")
            self._clock[partition] = event.ts
        self._advance(partition, rules, event.ts)
        self._found.extend(rules.on_event(event))

    def finish(self, end_ms: int | None = None) -> list[Incident]:
        """Run every clock to ``end_ms`` (default: the last ts seen) and list the incidents."""
        end = end_ms if end_ms is not None else max(self._clock.values(), default=0)
        for partition, rules in self._rules.items():
            self._advance(partition, rules, end)
        found = sorted(self._found, key=lambda a: (a.ts, a.student or "", a.kind))
        return [Incident(alert, alert.id in self.live_ids) for alert in found]

    def _advance(self, partition: int, rules: AlertRules, now: int) -> None:
        clock = self._clock[partition]
        while clock + self._tick_ms <= now:
            clock += self._tick_ms
            self._found.extend(rules.tick(clock))
        self._clock[partition] = clock
