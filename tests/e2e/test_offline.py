"""Offline detection across processes, inside the brief's budgets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import HEARTBEAT_S, System
from tests.e2e.test_delivery import row
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def offline_events(events: list[dict[str, Any]], attempt: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "student.offline" and e["attempt"] == attempt]


async def test_closed_socket_shows_offline_closed_within_a_second(system: System) -> None:
    student = await system.student("ex-d", "d1", slot=0)
    proctor = await system.proctor("ex-d", slot=1)
    await eventually(lambda: row(proctor, "d1", status="active"), within_s=5, what="active")
    closed_at = time.monotonic()
    await student.close()
    offline = await eventually(
        lambda: row(proctor, "d1", status="offline"), within_s=5, what="offline"
    )
    assert time.monotonic() - closed_at <= scaled(1.0)
    assert offline["offline_reason"] == "closed"
    assert [e["reason"] for e in offline_events(proctor.events, "d1")] == ["closed"]


async def test_silent_loss_is_a_heartbeat_timeout_then_back_online(system: System) -> None:
    student = await system.student("ex-e", "e1", slot=0)
    proctor = await system.proctor("ex-e", slot=1)
    await eventually(lambda: row(proctor, "e1", status="active"), within_s=5, what="active")
    await student.drop()
    lost_at = time.monotonic()
    offline = await eventually(
        lambda: row(proctor, "e1", status="offline"), within_s=10, what="heartbeat timeout"
    )
    # Budget: two heartbeat intervals plus one second after the last heartbeat.
    assert time.monotonic() - lost_at <= scaled(2 * HEARTBEAT_S + 1.0)
    assert offline["offline_reason"] == "heartbeat_timeout"

    again = await system.student("ex-e", "e1", slot=1, student="stu-e1")
    back = await eventually(
        lambda: [e for e in proctor.events if e["type"] == "student.back_online"],
        within_s=5,
        what="back online",
    )
    assert back[0]["offline_ms"] >= 500 and back[0]["reason"] == "heartbeat_timeout"
    await eventually(lambda: row(proctor, "e1", status="active"), within_s=5, what="active again")
    await again.close()


async def test_a_killed_gateway_shows_its_students_offline_within_ten_seconds(
    system: System,
) -> None:
    students = [await system.student("ex-f", f"f{n}", slot=0) for n in range(3)]
    proctor = await system.proctor("ex-f", slot=1)
    for student in students:
        await eventually(
            lambda s=student: row(proctor, s.attempt, status="active"),  # type: ignore[misc]
            within_s=5,
            what="active",
        )
    await system.cluster.kill("gateway-0")
    killed_at = time.monotonic()
    for student in students:
        await eventually(
            lambda s=student: row(proctor, s.attempt, status="offline"),  # type: ignore[misc]
            within_s=10,
            what=f"{student.attempt} offline",
        )
    assert time.monotonic() - killed_at <= scaled(10)
    reasons = {proctor.rows[s.attempt]["offline_reason"] for s in students}
    assert reasons == {"gateway_lost"}


async def test_a_rolling_restart_closes_with_1001_and_no_one_flaps_offline(
    system: System,
) -> None:
    student = await system.student("ex-g", "g1", slot=0)
    proctor = await system.proctor("ex-g", slot=1)
    await eventually(lambda: row(proctor, "g1", status="active"), within_s=5, what="active")
    await system.cluster.stop("gateway-0")
    assert student.close_code == 1001
    # The page reconnects to the other gateway well inside the notifier's grace.
    await system.student("ex-g", "g1", slot=1, student="stu-g1")
    await eventually(lambda: row(proctor, "g1", gateway=1), within_s=5, what="moved gateway")
    # Longer than the reconnect grace: still no offline verdict for a planned restart.
    deadline = time.monotonic() + scaled(7)
    while time.monotonic() < deadline:
        assert proctor.rows["g1"]["status"] != "offline"
        await asyncio.sleep(0.1)
    assert offline_events(proctor.events, "g1") == []
