"""The dashboard during a demo-like exam (tens of simulated students), and its screenshot.

Set PROCTOR_SCREENSHOT_DIR (e.g. docs/img) to keep the screenshot as ``dashboard.png``.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect

from adapters.tokens import StudentIdentity
from simulator.clients import StudentBot, wall_ms
from tests.browser.conftest import dashboard_url
from tests.conftest import scaled
from tests.e2e.conftest import CODEC, System

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

STUDENTS = 36
MS = 1000


async def demo_student(system: System, exam: str, n: int) -> StudentBot:
    attempt = f"{exam}-a{n:02d}"
    token = CODEC.issue(
        StudentIdentity(
            role="student",
            sub=f"s{n:02d}",
            exam=exam,
            attempt=attempt,
            name=f"Student {n:02d}",
            time_end=wall_ms() + 1_800_000 - n * 20_000,
        )
    )
    bot = StudentBot(system.cluster.gateway_url(n % 2), token, attempt)
    await bot.connect(system.http, timeout_s=scaled(15))
    system.bots.append(bot)
    return bot


async def test_dashboard_during_a_demo_exam(
    browser: BrowserContext, system: System, tmp_path: Path
) -> None:
    exam = "web-demo"
    bots = await asyncio.gather(*(demo_student(system, exam, n) for n in range(STUDENTS)))
    rng = random.Random(3)
    for bot in bots:
        await bot.send("progress", question_current=1, answered=0, total=20, time_remaining_s=1800)
        for _ in range(rng.randint(1, 12)):
            await bot.step(rng)
        if bot.status == "away":
            await bot.set_status("active")
    for bot in bots[:3]:
        await bot.send("submit", score=round(rng.uniform(55, 98), 1))
    for bot in bots[3:7]:
        await bot.set_status("away")

    page = await browser.new_page()
    await page.goto(dashboard_url(system.cluster, 1, exam))
    counts = page.get_by_test_id("counts")
    await expect(page.locator(".tile")).to_have_count(STUDENTS, timeout=scaled(30) * MS)
    # Two students close their exam page while the proctor watches: live offline alerts.
    for bot in bots[7:9]:
        await bot.close()
    await expect(counts.locator('[data-count="submitted"] b')).to_have_text(
        "3", timeout=scaled(10) * MS
    )
    await expect(counts.locator('[data-count="offline"] b')).to_have_text(
        "2", timeout=scaled(10) * MS
    )
    await expect(counts.locator('[data-count="away"] b')).to_have_text("4", timeout=scaled(10) * MS)
    # Incidents first: the two offline students, then the four away ones.
    states = await page.locator(".tile").evaluate_all(
        "(tiles) => tiles.map((t) => t.dataset.state)"
    )
    assert states[:6] == ["offline"] * 2 + ["away"] * 4
    assert Counter(states) == Counter(offline=2, away=4, submitted=3, active=STUDENTS - 9)

    # A supervisor room: star two students, show only them; the counts still cover everyone.
    for attempt in (f"{exam}-a10", f"{exam}-a11"):
        await page.locator(f'.tile[data-attempt="{attempt}"] .pin').click()
    await page.get_by_test_id("room-only").check()
    await expect(page.locator(".tile")).to_have_count(2)
    await expect(counts.locator(".total")).to_have_text(f"{STUDENTS} students")
    await page.get_by_test_id("room-only").uncheck()
    await page.get_by_test_id("search").fill("Student 1")
    await expect(page.locator(".tile")).to_have_count(10)  # Student 10..19
    await page.get_by_test_id("search").fill("")

    await page.locator(f'.tile[data-attempt="{exam}-a05"]').click()
    await page.locator("form.announce input").fill("Thirty minutes remain.")
    await page.locator("form.announce input").press("Enter")
    await expect(
        page.locator('.bar + .toolbar ~ .commands [data-command="announce"]')
    ).to_have_attribute("data-state", "acked", timeout=scaled(5) * MS)
    await expect(page.locator(".alert").first).to_be_visible(timeout=scaled(5) * MS)
    await page.wait_for_timeout(300)
    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("PROCTOR_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "dashboard.png")
