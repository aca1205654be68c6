"""Every dashboard panel shows data from a real Prometheus scraping the real system.

``infra/monitoring`` starts Debian's Prometheus (and Alertmanager) in a directory of its own
on free ports with the repository's rules, scraping every second; the system of
tests/e2e/conftest.py runs a small simulated exam (the load generator's students and proctors,
plus a few students of another exam who leave before submitting, so the notifier raises real
offline alerts). While the exam runs, each query of each committed dashboard
(deploy/grafana/dashboards/) is asked of Prometheus until it returns a number.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy import monitoring
from deploy.grafana import build
from simulator.launcher import free_port
from simulator.loadgen import LoadConfig, run_load
from tests.conftest import scaled
from tests.e2e.conftest import SECRET, System

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
# What Grafana would put in: a rate window of several scrapes, and every exam.
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$exam": ".*"}
STUDENTS_LEAVING = 3


class Prometheus:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/api/v1/query", params={"query": expr}) as response:
            body = await response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def targets(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/api/v1/targets") as response:
            body = await response.json()
        active: list[dict[str, Any]] = body["data"]["activeTargets"]
        return active


async def monitoring_command(env: dict[str, str], command: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "infra" / "monitoring"),
        command,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"infra/monitoring {command}: {text}"
    return text


@pytest.fixture
async def prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Prometheus]:
    env = {
        "PROCTOR_LOCAL_DIR": str(tmp_path / "monitoring"),
        "PROCTOR_PROMETHEUS_PORT": str(free_port()),
        "PROCTOR_ALERTMANAGER_PORT": str(free_port()),
        "PROCTOR_SCRAPE_INTERVAL": "1s",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    await monitoring_command(env, "up")
    try:
        async with aiohttp.ClientSession() as http:
            yield Prometheus(monitoring.prometheus_url(), http)
    finally:
        await monitoring_command(env, "down")


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, query) for every query of every committed dashboard."""
    queries = []
    for path in sorted(build.DASHBOARDS_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"{path.name}/{panel['title']}: unknown variable in {expr}"
                queries.append((path.stem, panel["title"], expr))
    return queries


def has_number(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


async def leave_before_submitting(system: System) -> None:
    """Students of their own exam who close their page mid-exam: offline alerts."""
    exam = "dashboards-leaving"
    students = [
        await system.student(exam, f"{exam}-a{n}", slot=n % 2) for n in range(STUDENTS_LEAVING)
    ]
    for bot in students:
        await bot.send("progress", question_current=1, answered=0, total=10, time_remaining_s=600)
    await asyncio.sleep(scaled(3))
    for bot in students:
        await bot.close()


async def test_every_dashboard_panel_shows_data_from_the_running_system(
    system: System, prometheus: Prometheus
) -> None:
    ops_ports = {name: svc.ops_port for name, svc in system.cluster.services.items()}
    monitoring.write_targets(ops_ports, "e2e")
    async with asyncio.timeout(scaled(30)):
        while True:
            targets = [
                t for t in await prometheus.targets() if t["labels"]["job"] in monitoring.JOBS
            ]
            if len(targets) == len(ops_ports) and all(t["health"] == "up" for t in targets):
                break
            await asyncio.sleep(0.5)

    config = LoadConfig(
        students=20,
        proctors=2,
        students_per_exam=10,
        rate_per_student=1.0,
        duration_s=30.0,
        join_window_s=2.0,
        drain_s=scaled(2),
        connect_timeout_s=scaled(15),
        tag="dash",
    )
    urls = (system.cluster.gateway_url(0), system.cluster.gateway_url(1))
    load = asyncio.create_task(run_load(config, urls, SECRET))
    leaving = asyncio.create_task(leave_before_submitting(system))

    queries = dashboard_queries()
    assert len(queries) >= 40
    first_data: dict[str, float] = {}
    most_students = 0.0
    started = time.monotonic()
    while not load.done():
        for _, _, expr in queries:
            if expr not in first_data and has_number(await prometheus.query(expr)):
                first_data[expr] = time.monotonic() - started
        connected = await prometheus.query('sum(gateway_connections{role="student"})')
        most_students = max([most_students, *(float(s["value"][1]) for s in connected)])
        await asyncio.sleep(1)
    outcome = await load
    await leaving

    report = [
        f"{board:9} | {panel} | {expr} | "
        + (f"data after {first_data[expr]:.0f}s" if expr in first_data else "NO DATA")
        for board, panel, expr in queries
    ]
    print("\n".join(report))
    missing = [line for line in report if line.endswith("NO DATA")]
    assert missing == [], "\n".join(missing)
    assert outcome.unacked == 0
    # The readings are the system's, not any numbers: the offline alerts of the leaving exam
    # and the load's updates are what Prometheus saw.
    offline = await prometheus.query(
        'sum(notifier_exam_offline_alerts_total{exam="dashboards-leaving"})'
    )
    assert [float(s["value"][1]) for s in offline] == [STUDENTS_LEAVING]
    updates = await prometheus.query("sum(gateway_events_published_total)")
    assert float(updates[0]["value"][1]) >= sum(len(seqs) for seqs in outcome.sent.values())
    assert most_students >= config.students
    monitoring.remove_targets("e2e")
