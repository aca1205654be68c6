"""Measure the dashboard under load: 1,000 students' rows fed into the page's frame handler.

    .venv/bin/python -m tests.browser.dashboard_load [--seconds 10] [--rates 200,2000,5000]

The page is the real dashboard (served from web/ by the gateway's own static routes) in
headless chromium, with its WebSocket left unopened (``offline=1``); frames are JSON strings
built in the page and parsed by it, then handed to the same ``handle`` the socket feeds, the way
a gateway sends them (one ``updates`` frame every 50 ms holding the rows that changed; 10 % of
rows change status, which reorders the grid). Reports frame times from requestAnimationFrame
deltas, long tasks (PerformanceObserver), render times and rows applied per second.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import unused_port
from playwright.async_api import CDPSession, Page, async_playwright

from services.gateway.app import add_web_routes
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
STUDENTS = 1000

FEEDER = """
async ({ students, rowsPerSecond, seconds }) => {
  const exam = "perf";
  const now = Date.now();
  const statuses = ["active", "active", "active", "away", "offline"];
  const rows = Array.from({ length: students }, (_, i) => ({
    exam, attempt: `a${i}`, student: `s${i}`, name: `Student ${String(i).padStart(4, "0")}`,
    status: "active", submitted: false, question_current: 1, answered: 0, total: 20,
    time_end: now + 3_600_000, extended_s: 0, paused: false, away_count: 0, away_ms_total: 0,
    offline_count: 0, seq: 1, client_seq: 1, updated_at: now,
  }));
  const d = window.dashboard;
  d.handle({ type: "snapshot", exam, students: rows });
  await new Promise((r) => setTimeout(r, 500));

  const deltas = [];
  let longTasks = 0, longTaskMs = 0;
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { longTasks += 1; longTaskMs += e.duration; }
  });
  observer.observe({ entryTypes: ["longtask"] });
  let last = performance.now(), running = true;
  const tick = (t) => { deltas.push(t - last); last = t; if (running) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  const renderStart = d.perf.renderMs.length;
  const appliedStart = d.model.rowsApplied;

  const framesPerSecond = 20;
  const perFrame = Math.max(1, Math.round(rowsPerSecond / framesPerSecond));
  let sent = 0, cursor = 0;
  const started = performance.now();
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      if (performance.now() - started >= seconds * 1000) { clearInterval(timer); resolve(); return; }
      const batch = [];
      for (let k = 0; k < perFrame; k++) {
        const old = rows[cursor];
        const changeStatus = Math.random() < 0.1;
        const row = { ...old, seq: old.seq + 1, client_seq: old.client_seq + 1, updated_at: Date.now(),
          answered: Math.min(20, old.answered + 1), question_current: Math.min(20, old.answered + 2),
          status: changeStatus ? statuses[(Math.random() * statuses.length) | 0] : old.status };
        if (row.status === "offline") { row.offline_since = Date.now(); row.offline_reason = "heartbeat_timeout"; }
        if (row.status === "away" && old.status !== "away") { row.away_since = Date.now(); row.away_count += 1; }
        rows[cursor] = row;
        batch.push(row);
        cursor = (cursor + 1) % students;
      }
      d.handle(JSON.parse(JSON.stringify({ type: "updates", exam, students: batch })));
      sent += batch.length;
    }, 1000 / framesPerSecond);
  });
  await new Promise((r) => setTimeout(r, 200));
  running = false;
  observer.disconnect();
  const elapsed = (performance.now() - started) / 1000;
  const renders = d.perf.renderMs.slice(renderStart);
  const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))] || 0; };
  const shownRows = document.querySelectorAll(".tile").length;
  const stale = rows.filter((r) => d.model.rows.get(r.attempt).seq !== r.seq).length;
  return {
    rowsPerSecondTarget: rowsPerSecond, sent, applied: d.model.rowsApplied - appliedStart,
    appliedPerSecond: (d.model.rowsApplied - appliedStart) / elapsed, stale, shownRows,
    frames: deltas.length, frameP50: pct(deltas, 0.5), frameP99: pct(deltas, 0.99), frameMax: Math.max(...deltas),
    renders: renders.length, renderP50: pct(renders, 0.5), renderP99: pct(renders, 0.99),
    longTasks, longTaskMs,
  };
}
"""


@asynccontextmanager
async def static_site() -> AsyncIterator[str]:
    app = web.Application()
    add_web_routes(app, WEB_ROOT)
    runner = web.AppRunner(app)
    await runner.setup()
    port = unused_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def measure_page(page: Page, base: str, rate: int, seconds: float) -> dict[str, Any]:
    await page.goto(f"{base}/?token=offline&exam=perf&offline=1")
    await page.wait_for_function("window.dashboard !== undefined")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    before = await _metrics(cdp)
    result: dict[str, Any] = await page.evaluate(
        FEEDER, {"students": STUDENTS, "rowsPerSecond": rate, "seconds": seconds}
    )
    after = await _metrics(cdp)
    # Where the main thread went (seconds), from Chromium's own counters.
    for name in ("ScriptDuration", "RecalcStyleDuration", "LayoutDuration", "TaskDuration"):
        result[name] = after.get(name, 0.0) - before.get(name, 0.0)
    return result


async def _metrics(cdp: CDPSession) -> dict[str, float]:
    answer = await cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in answer["metrics"]}


async def measure(rates: list[int], seconds: float) -> list[dict[str, Any]]:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        async with static_site() as base, async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1440, "height": 900},
            )
            try:
                results = []
                for rate in rates:
                    page = await context.new_page()
                    results.append(await measure_page(page, base, rate, seconds))
                    await page.close()
                return results
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| rows/s fed | rows applied/s | frame p50 | frame p99 | frame max | render p50 | render p99 | long tasks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['rowsPerSecondTarget']} | {r['appliedPerSecond']:.0f} | {r['frameP50']:.1f} ms "
            f"| {r['frameP99']:.1f} ms | {r['frameMax']:.1f} ms | {r['renderP50']:.1f} ms "
            f"| {r['renderP99']:.1f} ms | {r['longTasks']} ({r['longTaskMs']:.0f} ms) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="dashboard frame times under 1,000 students")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="200,2000,5000", help="rows per second, comma separated")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    results = asyncio.run(measure(rates, args.seconds))
    print(report(results))
    for r in results:
        print(
            f"{r['rowsPerSecondTarget']} rows/s: main thread busy {r['TaskDuration']:.2f} s "
            f"(script {r['ScriptDuration']:.2f}, style {r['RecalcStyleDuration']:.2f}, "
            f"layout {r['LayoutDuration']:.2f}) of {args.seconds:.0f} s"
        )


if __name__ == "__main__":
    main()
