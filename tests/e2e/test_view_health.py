"""A proctor is told when the view stops being live (router down) and when it is live again."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import System
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_router_down_makes_the_view_stale_and_its_return_live(system: System) -> None:
    student = await system.student("ex-vh", "vh1", slot=0)
    proctor = await system.proctor("ex-vh", slot=1)
    # Live while the router beats: nothing said past a whole stale window (5 s).
    await asyncio.sleep(6)
    assert proctor.view_status == []

    await system.cluster.kill("router")
    stale = await eventually(
        lambda: [f for f in proctor.view_status if not f["live"]],
        within_s=scaled(15),
        what="view_status live=false after the router died",
    )
    assert sorted(stale[0]["stale_partitions"]) == [0, 1, 2, 3]
    assert stale[0]["since"] > 0

    await system.cluster.restart("router")
    live = await eventually(
        lambda: [f for f in proctor.view_status if f["live"]],
        within_s=scaled(60),
        what="view_status live=true once a router routes again",
    )
    assert live[0]["stale_partitions"] == []
    # And the view is really live again: a new update reaches the proctor.
    await student.set_status("away")
    await eventually(
        lambda: proctor.rows.get("vh1", {}).get("status") == "away",
        within_s=scaled(15),
        what="an update after the router came back",
    )
