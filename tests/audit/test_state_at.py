"""Point in time against the real Kafka: the reducer's state at T, from the log alone."""

from __future__ import annotations

import pytest

from adapters.settings import CommonSettings
from audit.commands import state_at
from audit.sample_exam import simulate
from audit.settings import Settings
from domain.attempt_state import apply
from schemas.views import AttemptState, StudentView
from tests.audit.conftest import Sent, log_order, write_log
from tests.conftest import unique

pytestmark = pytest.mark.integration


def reducer_at(sent: list[Sent], at_ms: int) -> list[StudentView]:
    states: dict[str, AttemptState] = {}
    for item in log_order(sent):
        event = item.event
        if event.attempt is None or event.ts > at_ms:
            continue
        new = apply(states.get(event.attempt), event, item.offset)
        if new is not None:
            states[event.attempt] = new
    return sorted((s.view for s in states.values()), key=lambda v: v.student)


async def test_state_at_each_moment_equals_the_reducer_over_events_until_then(
    settings: CommonSettings, audit: Settings
) -> None:
    exam = unique("exam")
    sent = await write_log(settings, simulate(exam, students=12, steps=80, seed=7))
    await write_log(settings, simulate(unique("other"), students=2, steps=80, seed=8))
    times = sorted(s.event.ts for s in sent)
    for at_ms in (times[0] - 1, times[len(times) // 4], times[len(times) // 2] + 1, times[-1]):
        views, stats = await state_at(audit, exam, at_ms)
        assert views == reducer_at(sent, at_ms)
    # The last moment is the final state: every student submitted.
    assert views and all(v.submitted for v in views)
    # Early moments read only up to the time index's offsets, not the whole log.
    early, early_stats = await state_at(audit, exam, times[len(times) // 4])
    assert early_stats.read < stats.read
    assert not any(v.submitted for v in early)
