"""Point in time against the whole system: ``at T`` shows what a watching proctor had at T."""

from __future__ import annotations

import asyncio
import random

import pytest

from audit.commands import state_at
from simulator.clients import ProctorBot, StudentBot, wall_ms
from tests.audit.conftest import audit_settings
from tests.e2e.conftest import System, system
from tests.waiting import eventually

__all__ = ["system"]

pytestmark = pytest.mark.e2e


def settled(students: list[StudentBot], proctor: ProctorBot) -> bool:
    """Every event acknowledged and the proctor's rows show each student's last one."""
    if any(s.unacked for s in students):
        return False
    return all(proctor.rows.get(s.attempt, {}).get("client_seq") == s.seq for s in students)


async def test_state_at_equals_what_a_proctor_had_on_screen(system: System) -> None:
    exam = "ex-audit"
    students = [await system.student(exam, f"au{n}", slot=0, name=f"N{n}") for n in range(4)]
    proctor = await system.proctor(exam, slot=1)
    rng = random.Random(5)
    screens: list[tuple[int, dict[str, dict[str, object]]]] = []
    for _ in range(3):
        for _ in range(5):
            for student in students:
                await student.step(rng)
        await eventually(lambda: settled(students, proctor), within_s=10, what="proctor up to date")
        screens.append((wall_ms(), {a: dict(r) for a, r in proctor.rows.items()}))
        # Events are stamped to the millisecond: the next one must not share the moment's.
        await asyncio.sleep(0.01)
    await proctor.command("extend", exam, attempt="au1", seconds=120)
    await eventually(
        lambda: proctor.rows["au1"].get("extended_s") == 120, within_s=10, what="extension"
    )
    screens.append((wall_ms(), {a: dict(r) for a, r in proctor.rows.items()}))

    assert screens[0][1] != screens[-1][1], "the moments must differ for the test to mean anything"
    audit = audit_settings(system.settings)
    for at_ms, screen in screens:
        views, _ = await state_at(audit, exam, at_ms)
        replayed = {v.attempt: v.model_dump() for v in views}
        assert set(replayed) == set(screen)
        for attempt, row in screen.items():
            assert {k: row.get(k) for k in replayed[attempt]} == replayed[attempt], attempt
