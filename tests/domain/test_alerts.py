"""Alert rules over the exam log, with thresholds as parameters."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import ValidationError

from domain.alerts import AlertRules, AlertThresholds
from domain.liveness import derived_id
from schemas.events import (
    AlertRaised,
    EventSource,
    ExamEvent,
    OfflineReason,
    StudentOffline,
    StudentStatus,
    StudentSubmitted,
)

T0 = 1_700_000_000_000
STUDENT = EventSource(kind="student", id="s1")
NOTIFIER = EventSource(kind="notifier", id="n")


def status(status: Literal["active", "away"], ts: int, attempt: str = "a1") -> StudentStatus:
    return StudentStatus(
        id=f"st-{attempt}-{ts}",
        exam="e1",
        attempt=attempt,
        student="s1",
        ts=ts,
        source=STUDENT,
        status=status,
    )


def went_offline(ts: int, reason: OfflineReason = "closed") -> StudentOffline:
    return StudentOffline(
        id=f"off-{ts}",
        exam="e1",
        attempt="a1",
        student="s1",
        ts=ts,
        source=NOTIFIER,
        reason=reason,
        since=ts - 100,
    )


def feed(rules: AlertRules, *events: ExamEvent) -> list[AlertRaised]:
    return [alert for event in events for alert in rules.on_event(event)]


def rules(**thresholds: float) -> AlertRules:
    return AlertRules(AlertThresholds(**thresholds), source_id="n")


def test_each_offline_event_raises_an_offline_alert() -> None:
    r = rules()
    [first] = feed(r, went_offline(T0, "heartbeat_timeout"))
    assert first.kind == "offline" and first.attempt == "a1" and first.student == "s1"
    assert "connection lost" in first.detail and "s1" in first.detail
    assert first.id == derived_id("alert", "offline", "a1", "heartbeat_timeout", T0 - 100)
    [second] = feed(r, went_offline(T0 + 60_000))
    assert second.id != first.id
    # The same offline event read twice (replay) raises nothing new.
    assert feed(r, went_offline(T0, "heartbeat_timeout")) == []


def test_away_too_long_fires_once_per_episode_after_the_threshold() -> None:
    r = rules(away_threshold_s=30)
    feed(r, status("away", T0))
    assert r.tick(T0 + 29_999) == []
    [alert] = r.tick(T0 + 30_000)
    assert alert.kind == "away_too_long" and "30 s" in alert.detail
    assert alert.ts == T0 + 30_000
    assert r.tick(T0 + 90_000) == []
    feed(r, status("active", T0 + 100_000), status("away", T0 + 110_000))
    [again] = r.tick(T0 + 140_000)
    assert again.id != alert.id


def test_returning_before_the_threshold_raises_nothing() -> None:
    r = rules(away_threshold_s=30)
    feed(r, status("away", T0), status("active", T0 + 10_000))
    assert r.tick(T0 + 60_000) == []
    feed(r, status("away", T0 + 70_000), went_offline(T0 + 80_000))
    assert r.tick(T0 + 200_000) == []


def test_repeated_away_fires_on_the_nth_episode_within_the_window_once_per_crossing() -> None:
    r = rules(repeated_away_count=3, repeated_away_window_s=600, away_threshold_s=1000)
    minute = 60_000
    alerts = feed(
        r,
        status("away", T0),
        status("active", T0 + minute),
        status("away", T0 + 2 * minute),
        status("active", T0 + 3 * minute),
    )
    assert alerts == []
    [third] = feed(r, status("away", T0 + 4 * minute))
    assert third.kind == "repeated_away" and "3 times within 10 min" in third.detail
    # Still above the threshold: no repeat.
    assert feed(r, status("active", T0 + 5 * minute), status("away", T0 + 6 * minute)) == []
    # Much later the count has fallen below N; a new crossing alerts again.
    later = T0 + 60 * minute
    alerts = feed(
        r,
        status("active", later - minute),
        status("away", later),
        status("active", later + 1),
        status("away", later + minute),
        status("active", later + minute + 1),
        status("away", later + 2 * minute),
    )
    assert [a.kind for a in alerts] == ["repeated_away"]


def test_a_repeated_away_status_is_not_a_new_episode() -> None:
    r = rules(repeated_away_count=2, away_threshold_s=1000)
    assert feed(r, status("away", T0), status("away", T0 + 1_000), status("away", T0 + 2_000)) == []


def test_thresholds_change_the_outcome_of_the_same_history() -> None:
    history: list[ExamEvent] = [
        status("away", T0),
        status("active", T0 + 20_000),
        status("away", T0 + 100_000),
        status("active", T0 + 125_000),
    ]

    def run(thresholds: AlertThresholds) -> list[str]:
        r = AlertRules(thresholds, source_id="audit")
        out: list[str] = []
        for event in history:
            out += [a.kind for a in r.tick(event.ts)]
            out += [a.kind for a in r.on_event(event)]
        return out

    assert run(AlertThresholds()) == []
    assert run(AlertThresholds(away_threshold_s=15, repeated_away_count=2)) == [
        "away_too_long",
        "repeated_away",
        "away_too_long",
    ]


def test_alerts_already_in_the_log_are_not_raised_again() -> None:
    first_run = rules(away_threshold_s=30)
    feed(first_run, status("away", T0))
    [raised] = first_run.tick(T0 + 30_000)
    # A restarted notifier re-reads the log, including its own alert.
    second_run = rules(away_threshold_s=30)
    feed(second_run, status("away", T0), raised)
    assert second_run.tick(T0 + 40_000) == []


def test_no_alerts_after_submission() -> None:
    r = rules(away_threshold_s=30)
    submitted = StudentSubmitted(
        id="sub", exam="e1", attempt="a1", student="s1", ts=T0, source=STUDENT, score=1.0
    )
    assert feed(r, status("away", T0 - 5_000), submitted, status("away", T0 + 1_000)) == []
    assert r.tick(T0 + 100_000) == []
    assert feed(r, went_offline(T0 + 200_000)) == []


def test_thresholds_are_frozen_and_validated() -> None:
    thresholds = AlertThresholds()
    with pytest.raises(ValidationError):
        thresholds.away_threshold_s = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        AlertThresholds(repeated_away_count=1)
