"""Refolding and re-running rules: first-attempt choice and alerts with other thresholds."""

from __future__ import annotations

from audit.replay import AlertReplay, ExamFold, first_attempts
from domain.alerts import AlertThresholds
from domain.liveness import derived_id
from schemas.events import AlertRaised, StudentConnected, StudentStatus
from tests.audit.support import NOTIFIER, T0, ev


def test_first_attempts_keep_the_lowest_attempt_number_at_its_last_seq() -> None:
    fold = ExamFold()
    fold.feed(ev(StudentConnected, 0, attempt="retry", attempt_no=2, conn="c", gateway=0), 1)
    fold.feed(ev(StudentConnected, 0, attempt="first", conn="c", gateway=0), 5)
    fold.feed(ev(StudentStatus, 1, attempt="first", status="away"), 9)
    fold.feed(ev(StudentStatus, 1, attempt="first", status="away"), 4)  # replayed offset: no-op
    chosen = first_attempts(s.view for s in fold.states.values())
    assert set(chosen) == {"s1"}
    assert (chosen["s1"].attempt, chosen["s1"].seq, chosen["s1"].status) == ("first", 9, "away")


def away_episode(
    replay: AlertReplay, partition: int, attempt: str, start_s: float, end_s: float
) -> None:
    replay.feed(partition, ev(StudentConnected, start_s - 1, attempt=attempt, conn="c", gateway=0))
    replay.feed(partition, ev(StudentStatus, start_s, attempt=attempt, status="away"))
    replay.feed(partition, ev(StudentStatus, end_s, attempt=attempt, status="active"))


def test_a_lower_threshold_finds_more_incidents_at_the_threshold_time() -> None:
    def incidents(threshold: float) -> list[tuple[str, int]]:
        replay = AlertReplay(AlertThresholds(away_threshold_s=threshold), tick_ms=1000)
        away_episode(replay, 0, "a1", 10, 35)  # 25 s away
        away_episode(replay, 1, "a2", 10, 50)  # 40 s away
        return [(i.alert.attempt or "", i.alert.ts - T0) for i in replay.finish()]

    assert incidents(30) == [("a2", 40_000)]
    assert incidents(20) == [("a1", 30_000), ("a2", 30_000)]


def test_alerts_in_the_log_are_marked_but_do_not_silence_the_replay() -> None:
    replay = AlertReplay(AlertThresholds(away_threshold_s=20), tick_ms=1000)
    since = T0 + 10_000
    live_id = derived_id("alert", "away_too_long", "a1", since)
    replay.feed(
        0, ev(AlertRaised, 40, id=live_id, source=NOTIFIER, kind="away_too_long", detail="x")
    )
    away_episode(replay, 0, "a1", 10, 45)
    [incident] = replay.finish()
    assert incident.raised_live and incident.alert.id == live_id
    assert replay.live_alerts == 1


def test_an_episode_open_at_the_end_is_judged_at_the_end() -> None:
    replay = AlertReplay(AlertThresholds(away_threshold_s=20), tick_ms=1000)
    replay.feed(0, ev(StudentConnected, 0, conn="c", gateway=0))
    replay.feed(0, ev(StudentStatus, 5, status="away"))
    assert replay.finish(T0 + 20_000) == []
    replay2 = AlertReplay(AlertThresholds(away_threshold_s=20), tick_ms=1000)
    replay2.feed(0, ev(StudentConnected, 0, conn="c", gateway=0))
    replay2.feed(0, ev(StudentStatus, 5, status="away"))
    assert [i.alert.kind for i in replay2.finish(T0 + 25_000)] == ["away_too_long"]
