"""A small exam through the simulator: tens of students in worker processes, two proctors.

Every update each student sends must reach the proctors watching its exam, either itself
or folded into a newer state of the same student (coalescing), and every student's final
state (its submit) must be on its proctor's dashboard.
"""

from __future__ import annotations

import pytest

from simulator.accounting import account, connect_summary
from simulator.loadgen import LoadConfig, run_load
from tests.conftest import scaled
from tests.e2e.conftest import SECRET, System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_small_exam_loses_nothing_and_every_final_state_arrives(system: System) -> None:
    config = LoadConfig(
        students=30,
        proctors=2,
        students_per_exam=15,
        rate_per_student=1.0,
        duration_s=10.0,
        join_window_s=2.0,
        drain_s=scaled(3),
        connect_timeout_s=scaled(15),
    )
    urls = (system.cluster.gateway_url(0), system.cluster.gateway_url(1))

    outcome = await run_load(config, urls, SECRET)

    connects = connect_summary(outcome.connects)
    assert (connects["succeeded"], connects["failed"]) == (30, 0)
    assert len(outcome.sent) == 30 and all(len(seqs) >= 5 for seqs in outcome.sent.values())
    assert outcome.unacked == 0
    assert sorted(len(attempts) for attempts in outcome.watching.values()) == [15, 15]
    report = account(outcome.sent, outcome.receipts, outcome.watching)
    expected = sum(len(outcome.sent[a]) for attempts in outcome.watching.values() for a in attempts)
    assert report.total("lost") == 0
    assert report.total("final_state_missing") == 0
    assert report.total("seen") + report.total("superseded") == expected
    assert report.total("seen") > 0
