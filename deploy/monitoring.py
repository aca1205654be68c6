"""Point the local Prometheus (``infra/monitoring``) at a running system.

Prometheus reads its scrape targets from files, one directory per job (gateway, router,
status, notifier, lti). A launcher that knows where its services listen writes one file per job
while they run and removes it when they stop, so Prometheus scrapes exactly the processes that
exist and a stopped demo raises no ``up == 0`` alert.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBS = ("gateway", "router", "status", "notifier", "lti")


def local_dir() -> Path:
    return Path(os.environ.get("PROCTOR_LOCAL_DIR", ROOT / ".local"))


def targets_dir() -> Path:
    return local_dir() / "conf" / "prometheus" / "targets"


def prometheus_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('PROCTOR_PROMETHEUS_PORT', '9090')}"


def prometheus_ready(url: str | None = None, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url or prometheus_url()}/-/ready", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_monitoring() -> None:
    """``infra/monitoring up``: starts what is not running, reuses what is."""
    subprocess.run([str(ROOT / "infra" / "monitoring"), "up"], check=True)


def write_targets(ops_ports: Mapping[str, int], run: str) -> list[Path]:
    """One file per job for this run: ``ops_ports`` maps service names (``gateway-0``,
    ``router``, ...) to the port serving their ``/metrics``."""
    by_job: dict[str, list[dict[str, object]]] = {}
    for name, port in sorted(ops_ports.items()):
        job, _, slot = name.partition("-")
        if job not in JOBS:
            raise ValueError(f"{name}: not a service Prometheus scrapes ({', '.join(JOBS)})")
        labels = {"run": run} | ({"slot": slot} if slot else {})
        by_job.setdefault(job, []).append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
    written = []
    for job, groups in by_job.items():
        folder = targets_dir() / job
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{run}.json"
        # Written whole then renamed: Prometheus never reads half a file.
        partial = path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(groups, indent=2) + "\n")
        partial.replace(path)
        written.append(path)
    return written


def remove_targets(run: str) -> None:
    for job in JOBS:
        (targets_dir() / job / f"{run}.json").unlink(missing_ok=True)


def graph_url(expr: str, url: str | None = None, range_input: str = "15m") -> str:
    query = urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_input})
    return f"{url or prometheus_url()}/graph?{query}"


def attach(ops_ports: Mapping[str, int], run: str, *, start: bool) -> str | None:
    """Scrape this run if Prometheus is up (started first with ``start``); its graph of the
    updates per second, or None when there is no Prometheus to look at."""
    if start:
        start_monitoring()
    if not prometheus_ready():
        return None
    write_targets(ops_ports, run)
    return graph_url("proctor:updates:rate1m")
