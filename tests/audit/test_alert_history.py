"""Re-running the alert rules over a real log with other thresholds."""

from __future__ import annotations

import pytest

from adapters.settings import CommonSettings
from audit.commands import replay_alerts
from audit.sample_exam import simulate
from audit.settings import Settings
from domain.alerts import AlertThresholds
from tests.audit.conftest import Sent, log_order, write_log
from tests.conftest import unique

pytestmark = pytest.mark.integration


def long_aways(sent: list[Sent], threshold_ms: int) -> set[tuple[str, int]]:
    """Away episodes (attempt, start) that lasted at least the threshold, found by hand."""
    found: set[tuple[str, int]] = set()
    since: dict[str, int] = {}
    seen: set[tuple[str | None, str]] = set()
    last_ts = max(s.event.ts for s in sent)
    for item in log_order(sent):
        e = item.event
        if e.attempt is None or (e.attempt, e.id) in seen:
            continue
        seen.add((e.attempt, e.id))
        status = getattr(e, "status", None)
        if status == "away" and e.attempt not in since:
            since[e.attempt] = e.ts
        elif e.attempt in since and (
            status == "active" or e.type in ("student.offline", "student.submitted")
        ):
            start = since.pop(e.attempt)
            if e.ts - start >= threshold_ms:
                found.add((e.attempt, start))
    found |= {(a, start) for a, start in since.items() if last_ts - start >= threshold_ms}
    return found


async def test_lower_away_threshold_lists_the_longer_episodes(
    settings: CommonSettings, audit: Settings
) -> None:
    exam = unique("exam")
    sent = await write_log(settings, simulate(exam, students=20, steps=120, seed=4))
    results: dict[int, set[tuple[str, int]]] = {}
    # Simulated episodes last whole 5 s steps; thresholds between steps keep the notifier's
    # 1 s tick granularity out of the comparison.
    for threshold in (22, 32):
        incidents, replay, _ = await replay_alerts(
            audit, exam, AlertThresholds(away_threshold_s=threshold, repeated_away_count=50)
        )
        away = {
            (i.alert.attempt or "", i.alert.ts)
            for i in incidents
            if i.alert.kind == "away_too_long"
        }
        results[threshold] = away
        offline = [i for i in incidents if i.alert.kind == "offline"]
        assert len(offline) == sum(s.event.type == "student.offline" for s in sent)
    for threshold, away in results.items():
        expected = long_aways(sent, threshold * 1000)
        # Each alert comes at the first tick past the threshold, on the episode's attempt.
        assert sorted(a for a, _ in away) == sorted(a for a, _ in expected)
        assert all(
            any(
                a == b and threshold * 1000 <= ts - start < threshold * 1000 + 1000
                for b, start in expected
            )
            for a, ts in away
        )
    assert len(results[22]) > len(results[32]) > 0
