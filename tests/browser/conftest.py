"""Browser tests: Debian's headless chromium driven by Playwright against the real system.

The whole system runs as processes (the e2e ``start_system``: two gateways, router, status,
notifier); the gateways serve web/ themselves, so the pages load from the gateway they talk to.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import BrowserContext, async_playwright

from adapters.tokens import ProctorIdentity, StudentIdentity
from simulator.clients import wall_ms
from simulator.launcher import Cluster
from tests.e2e.conftest import CODEC, System, system  # noqa: F401  (the fixture, re-exported)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[BrowserContext]:
    """One chromium with a fresh profile (a persistent context is how --user-data-dir is set)."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1440, "height": 900},
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def http_base(cluster: Cluster, slot: int) -> str:
    return f"http://127.0.0.1:{cluster.services[f'gateway-{slot}'].ops_port}"


def student_token(exam: str, attempt: str, name: str, *, minutes: int = 30) -> str:
    return CODEC.issue(
        StudentIdentity(
            role="student",
            sub=f"stu-{attempt}",
            exam=exam,
            attempt=attempt,
            name=name,
            time_end=wall_ms() + minutes * 60_000,
        )
    )


def proctor_token(*exams: str) -> str:
    return CODEC.issue(
        ProctorIdentity(role="proctor", sub="proctor-1", exams=exams, name="Proctor")
    )


def dashboard_url(cluster: Cluster, slot: int, exam: str) -> str:
    return f"{http_base(cluster, slot)}/?token={proctor_token(exam)}&exam={exam}"


def exam_url(cluster: Cluster, slot: int, token: str) -> str:
    return f"{http_base(cluster, slot)}/exam?token={token}"


__all__ = ["System", "system", "browser"]


# Headless chromium keeps every page visible and focused (Playwright emulates focus, and
# minimising the window changes nothing), so the test plays the browser's part: it flips what
# document.visibilityState / document.hidden / document.hasFocus() report and fires the same
# events a tab switch fires. The student library's own listeners, debounce and reporting run.
VISIBILITY_SHIM = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", { get: () => hidden ? "hidden" : "visible", configurable: true });
  Object.defineProperty(Document.prototype, "hidden", { get: () => hidden, configurable: true });
  Document.prototype.hasFocus = () => !hidden;
  window.__setTabHidden = (value) => {
    hidden = value;
    window.dispatchEvent(new Event(value ? "blur" : "focus"));
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();
"""
