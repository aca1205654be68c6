"""LTI 1.3 launches in Chromium, cross-site as with a real LMS: the platform (lti1p3platform)
on ``localhost``, the tool and the gateways on ``127.0.0.1``. A learner's launch opens a live
exam page that the instructor's launch watches on the dashboard, with the enrolled students
who have not started listed; a relaunch resumes the attempt. Screenshots for docs/lms.md."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from adapters.settings import CommonSettings
from domain import lti as rules
from tests.browser.conftest import http_base
from tests.conftest import scaled
from tests.e2e.conftest import SECRET, System
from tests.services.lti.conftest import (
    COURSE,
    DASHBOARD_LINK,
    EXAM_LINK,
    LtiPair,
    start_pair,
    stop_pair,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

MS = 1000
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture
async def lti_system(system: System, infra: CommonSettings) -> AsyncIterator[LtiPair]:
    pair, server = await start_pair(infra, http_base(system.cluster, 0), secret=SECRET)
    try:
        yield pair
    finally:
        await stop_pair(pair, server)


async def launch(browser: BrowserContext, pair: LtiPair, user: str, link: str) -> Page:
    page = await browser.new_page()
    await page.goto(pair.platform.launch_url_for(user, COURSE, link))
    return page


async def test_learner_and_instructor_launch_from_the_lms(
    browser: BrowserContext, lti_system: LtiPair
) -> None:
    pair = lti_system
    exam = rules.exam_id(pair.platform.issuer, pair.platform.deployment_id, COURSE, EXAM_LINK)
    alice = rules.attempt_id(exam, rules.person_id(pair.platform.issuer, "alice"))

    course = await browser.new_page()
    await course.goto(pair.platform.course_url(COURSE, "alice"))
    await course.screenshot(path=str(SHOTS / "lti-platform-course.png"))
    await course.get_by_role("link", name="Midterm").click()
    # Through the tool's login, the platform's auth and the cross-site form post, to the
    # exam page on the gateway, connected with the token the launch handed over.
    await expect(course.get_by_test_id("connection")).to_have_text("open", timeout=scaled(20) * MS)
    assert course.url.startswith(http_base_of(pair) + "/exam")
    assert "token" not in course.url  # the fragment was read and cleared
    # The link's exam_minutes=45 became the attempt's deadline.
    await expect(course.get_by_test_id("timer")).to_have_text(re.compile(r"^4[45]:\d\d$"))
    await course.screenshot(path=str(SHOTS / "lti-exam-page.png"))

    dashboard = await launch(browser, pair, "carol", EXAM_LINK)
    await expect(dashboard.get_by_test_id("connection")).to_have_attribute(
        "data-subscribed", "1", timeout=scaled(30) * MS
    )
    card = dashboard.locator(f'.tile[data-attempt="{alice}"]')
    await expect(card).to_have_attribute("data-state", "active", timeout=scaled(10) * MS)
    await expect(card).to_contain_text("Alice Learner")
    # The roster (NRPS): the two learners who have not opened the exam.
    waiting = dashboard.get_by_test_id("not-started")
    await expect(waiting).to_contain_text("Not started (2)", timeout=scaled(10) * MS)
    await expect(waiting).to_contain_text("Bob Learner")
    await expect(waiting).to_contain_text("Dan Learner")
    await expect(waiting).not_to_contain_text("Carol")  # staff are not students
    await dashboard.screenshot(path=str(SHOTS / "lti-dashboard.png"))

    # Bob launches: he leaves the not-started list for the grid.
    bob = await launch(browser, pair, "bob", EXAM_LINK)
    await expect(bob.get_by_test_id("connection")).to_have_text("open", timeout=scaled(20) * MS)
    await expect(waiting).to_contain_text("Not started (1)", timeout=scaled(10) * MS)
    await expect(dashboard.locator(".tile")).to_have_count(2)

    # Alice closes her tab and launches again: the same attempt, not a second tile.
    await course.close()
    await expect(card).to_have_attribute("data-state", "offline", timeout=scaled(10) * MS)
    again = await launch(browser, pair, "alice", EXAM_LINK)
    await expect(again.get_by_test_id("connection")).to_have_text("open", timeout=scaled(20) * MS)
    await expect(card).to_have_attribute("data-state", "active", timeout=scaled(10) * MS)
    await expect(dashboard.locator(".tile")).to_have_count(2)


async def test_a_learner_on_the_instructor_link_gets_an_error_page(
    browser: BrowserContext, lti_system: LtiPair
) -> None:
    page = await launch(browser, lti_system, "dan", DASHBOARD_LINK)
    await expect(page.locator("#code")).to_have_text("role_not_allowed", timeout=scaled(10) * MS)
    await expect(page.locator("h1")).to_have_text("This exam tool could not open")
    assert page.url.startswith(lti_system.tool_url + "/lti/launch")
    await page.screenshot(path=str(SHOTS / "lti-refused.png"))


def http_base_of(pair: LtiPair) -> str:
    return pair.settings.lti.app_url.rstrip("/")
