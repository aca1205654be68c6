"""The proctor dashboard and the student exam page in a real browser, against the real system."""

from __future__ import annotations

import time

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import (
    VISIBILITY_SHIM,
    dashboard_url,
    exam_url,
    student_token,
)
from tests.conftest import scaled
from tests.e2e.conftest import System

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

MS = 1000


def tile(attempt: str) -> str:
    return f'.tile[data-attempt="{attempt}"]'


async def open_dashboard(browser: BrowserContext, system: System, exam: str, slot: int = 1) -> Page:
    page = await browser.new_page()
    await page.goto(dashboard_url(system.cluster, slot, exam))
    await expect(page.get_by_test_id("connection")).to_have_attribute(
        "data-subscribed", "1", timeout=scaled(30) * MS
    )
    return page


async def open_exam(
    browser: BrowserContext, system: System, exam: str, attempt: str, name: str
) -> Page:
    page = await browser.new_page()
    await page.add_init_script(VISIBILITY_SHIM)
    await page.goto(
        exam_url(system.cluster, 0, student_token(exam, attempt, name)) + "&debounce=300"
    )
    await expect(page.get_by_test_id("connection")).to_have_text("open", timeout=scaled(15) * MS)
    return page


async def test_student_page_and_dashboard_follow_each_other(
    browser: BrowserContext, system: System
) -> None:
    exam, attempt = "web-a", "web-a1"
    dashboard = await open_dashboard(browser, system, exam)
    student = await open_exam(browser, system, exam, attempt, "Grace Hopper")
    card = dashboard.locator(tile(attempt))
    await expect(card).to_have_attribute("data-state", "active", timeout=scaled(5) * MS)

    # Tab switch: the library's debounce (300 ms here) plus the pipeline must stay within 1 s.
    hidden_at = time.monotonic()
    await student.evaluate("window.__setTabHidden(true)")
    await expect(card).to_have_attribute("data-state", "away", timeout=scaled(3) * MS)
    assert time.monotonic() - hidden_at <= scaled(1.0)
    await student.evaluate("window.__setTabHidden(false)")
    await expect(card).to_have_attribute("data-state", "active", timeout=scaled(1) * MS)

    # A blur shorter than the debounce is not reported at all.
    await student.evaluate(
        "window.__setTabHidden(true); setTimeout(() => window.__setTabHidden(false), 100)"
    )
    await dashboard.wait_for_timeout(800)
    await expect(card).to_have_attribute("data-state", "active")
    assert await card.locator(".away").inner_text() == "↗1"

    # Proctor actions, each acknowledged on the dashboard and seen by the student page.
    await card.click()
    panel = dashboard.get_by_test_id("panel")
    await panel.locator('input[name="message"]').fill("Eyes on your own screen, please.")
    await panel.locator('input[name="message"]').press("Enter")
    await expect(panel.locator('[data-command="message"]')).to_have_attribute(
        "data-state", "acked", timeout=scaled(5) * MS
    )
    await expect(student.get_by_test_id("messages")).to_contain_text(
        "Eyes on your own screen", timeout=scaled(5) * MS
    )

    await panel.locator('[data-action="pause"]').click()
    await expect(student.get_by_test_id("paused")).to_be_visible(timeout=scaled(5) * MS)
    await expect(card).to_have_attribute("data-paused", "1", timeout=scaled(5) * MS)
    assert await student.locator("main button").first.is_disabled()
    await panel.locator('[data-action="resume"]').click()
    await expect(student.get_by_test_id("paused")).to_be_hidden(timeout=scaled(5) * MS)
    await expect(card).to_have_attribute("data-paused", "0", timeout=scaled(5) * MS)

    timer_before = await student.evaluate("window.examClient.remainingMs()")
    await panel.locator("input.num").fill("10")
    await panel.locator('[data-action="extend"]').click()
    await expect(panel.locator('[data-command="extend"]')).to_have_attribute(
        "data-state", "acked", timeout=scaled(5) * MS
    )
    await student.wait_for_function(
        f"window.examClient.remainingMs() > {timer_before} + 500000", timeout=scaled(5) * MS
    )
    await expect(panel.get_by_test_id("panel-left")).to_contain_text(
        "(+600 s)", timeout=scaled(5) * MS
    )
    panel_left = await panel.get_by_test_id("panel-left").inner_text()
    assert panel_left.startswith(("39:", "40:")), panel_left  # 30 min + 10 min, minus a few seconds

    await dashboard.locator("form.announce input").fill("Ten minutes left.")
    await dashboard.locator("form.announce input").press("Enter")
    await expect(student.get_by_test_id("messages")).to_contain_text(
        "Announcement: Ten minutes left.", timeout=scaled(5) * MS
    )

    # Closing the tab: red, with the reason, and an entry on the timeline.
    await student.close()
    await expect(card).to_have_attribute("data-state", "offline", timeout=scaled(3) * MS)
    await expect(card.locator(".note")).to_contain_text("closed")
    await expect(dashboard.get_by_test_id("timeline")).to_contain_text("active → offline (closed)")
    await expect(dashboard.get_by_test_id("alerts")).to_contain_text(
        "offline", timeout=scaled(5) * MS
    )
    alerts = dashboard.locator(".alert")
    before = await alerts.count()
    await alerts.first.locator(".dismiss").click()
    await expect(alerts).to_have_count(before - 1)


async def test_dashboard_reconnects_after_its_gateway_restarts(
    browser: BrowserContext, system: System
) -> None:
    exam = "web-b"
    dashboard = await open_dashboard(browser, system, exam, slot=1)
    student = await open_exam(browser, system, exam, "web-b1", "Alan Turing")
    card = dashboard.locator(tile("web-b1"))
    await expect(card).to_have_attribute("data-state", "active", timeout=scaled(5) * MS)

    await system.cluster.stop("gateway-1")
    connection = dashboard.get_by_test_id("connection")
    await expect(connection).to_have_attribute("data-state", "reconnecting", timeout=scaled(5) * MS)
    # While the dashboard is cut off, the student goes away: only the new snapshot can tell.
    await student.evaluate("window.__setTabHidden(true)")
    await system.cluster.start("gateway-1")
    await expect(connection).to_have_attribute("data-state", "open", timeout=scaled(40) * MS)
    await expect(connection).to_have_attribute("data-subscribed", "1", timeout=scaled(15) * MS)
    await expect(card).to_have_attribute("data-state", "away", timeout=scaled(5) * MS)
    assert await dashboard.evaluate("window.dashboard.conn.reconnects") == 1
    # And live updates flow again on the new connection.
    await student.evaluate("window.__setTabHidden(false)")
    await expect(card).to_have_attribute("data-state", "active", timeout=scaled(3) * MS)


async def test_dashboard_says_when_its_view_is_stale_and_when_it_is_live(
    browser: BrowserContext, system: System
) -> None:
    exam = "web-c"
    dashboard = await open_dashboard(browser, system, exam, slot=1)
    student = await open_exam(browser, system, exam, "web-c1", "Ada Lovelace")
    card = dashboard.locator(tile("web-c1"))
    await expect(card).to_have_attribute("data-state", "active", timeout=scaled(5) * MS)
    banner = dashboard.get_by_test_id("view-stale")
    await expect(banner).to_have_count(0)

    await system.cluster.kill("router")
    await expect(banner).to_be_visible(timeout=scaled(15) * MS)
    await expect(banner).to_contain_text("Live updates paused")
    await system.cluster.start("router")
    await expect(banner).to_have_count(0, timeout=scaled(60) * MS)
    # Live again for real: an update made now reaches the card.
    await student.evaluate("window.__setTabHidden(true)")
    await expect(card).to_have_attribute("data-state", "away", timeout=scaled(5) * MS)


async def test_the_exam_page_sends_heartbeats_only_when_it_sends_nothing_else(
    browser: BrowserContext, system: System
) -> None:
    page = await browser.new_page()
    sent: list[tuple[float, str]] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent", lambda payload: sent.append((time.monotonic(), str(payload)))
        ),
    )
    await page.goto(exam_url(system.cluster, 0, student_token("web-hb", "web-hb1", "Ada")))
    await expect(page.get_by_test_id("connection")).to_have_text("open", timeout=scaled(15) * MS)

    def heartbeats(since: float, until: float) -> list[float]:
        return [at for at, frame in sent if since <= at < until and '"heartbeat"' in frame]

    # Busy: a frame every 300 ms, so the 1 s heartbeat interval never passes in silence.
    busy_from = time.monotonic()
    for n in range(10):
        await page.evaluate(f"window.examClient.progress({{answered: {n}, total: 20}})")
        await page.wait_for_timeout(300)
    busy_until = time.monotonic()
    assert heartbeats(busy_from + 0.5, busy_until) == []

    # Quiet: a heartbeat once an interval has passed with nothing else sent, and no longer gap.
    await page.wait_for_timeout(3_500)
    quiet = heartbeats(busy_until, time.monotonic())
    assert len(quiet) >= 2
    gaps = [b - a for (a, _), (b, _) in zip(sent, sent[1:], strict=False) if a >= busy_from]
    assert max(gaps) <= scaled(1.5)
