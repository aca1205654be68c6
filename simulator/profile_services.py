"""Where the CPU goes: py-spy on every Python service under load, and their idle cost.

py-spy is a tool, not a dependency of the project: install its PyPI wheel into a venv of
its own under ``.local/`` (or point ``PROCTOR_PY_SPY`` at one)::

    python3 -m venv .local/tools-venv && .local/tools-venv/bin/pip install py-spy==0.4.2

    .venv/bin/python -m simulator.profile_services load --scenario S2 --duration 150 --record 60
    .venv/bin/python -m simulator.profile_services idle --duration 60
    .venv/bin/python -m simulator.profile_services summarise .local/profiles/<run>

``load`` starts this project's whole system (as ``side-by-side`` does), drives the scenario's
workload and, ``--warmup`` seconds into the sending window, records both gateways, the
router, status and the notifier at once for ``--record`` seconds (``--nonblocking``: the
services are never paused; ``--function``: samples aggregated per function; idle threads
left out, so samples are CPU). Raw collapsed stacks go to ``.local/profiles/<run>/<service>.txt``,
the load result (CPU per process from /proc) to ``result.json``, and the summary to
``summary.md``: µs of CPU per update per process (from /proc over the recorded window) and
each service's top functions by self and by cumulative samples, each converted to µs per
update as its share of that process's samples times the process's µs per update.
``idle`` starts the system with no exam at all and samples every process's CPU for
``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console

from adapters.gc_tuning import GcPolicy, tune_gc
from simulator.accounting import json_safe
from simulator.resources import ResourceSampler, infra_pids
from simulator.side_by_side import (
    PROJECT_SERVER,
    ROOT,
    SCENARIOS,
    Target,
    measured,
    step_configs,
)

PROFILES = ROOT / ".local" / "profiles"
PYTHON_SERVICES = PROJECT_SERVER
_LINE = re.compile(r":\d+\)$")
# Start-up and event-loop frames under which everything runs: no information in a cumulative
# list. (``run (asyncio/runners.py)`` as a *self* frame is time inside uvloop's C loop: I/O,
# callbacks' C parts, the selector; it stays in the self column.)
SCAFFOLD = re.compile(
    r"^(<module> |_run_module_as_main |_run_code |run \(uvloop|run \(asyncio/runners|"
    r"run_until_complete |main \(services/|_bootstrap |_bootstrap_inner |run \(threading)"
)


def py_spy() -> str:
    for candidate in (
        os.environ.get("PROCTOR_PY_SPY"),
        str(ROOT / ".local" / "tools-venv" / "bin" / "py-spy"),
        shutil.which("py-spy"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError("py-spy not found: see `python -m simulator.profile_services -h`")


# -- collapsed stacks (pure) -------------------------------------------------------------------


def short_frame(frame: str) -> str:
    """``handle (/x/site-packages/aiokafka/conn.py:412)`` -> ``handle (aiokafka/conn.py)``."""
    frame = _LINE.sub(")", frame.strip())
    for marker in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/", f"{ROOT}/"):
        head, found, tail = frame.partition(marker)
        if found:
            name = head.rsplit("(", 1)[0]
            return f"{name}({tail}"
    return frame


@dataclass
class StackProfile:
    samples: int
    self_counts: Counter[str]
    cumulative: Counter[str]


def parse_collapsed(lines: Iterable[str]) -> StackProfile:
    """py-spy's ``--format raw`` (``frame;frame;...;leaf count``): samples per function as
    the leaf (self) and anywhere on the stack (cumulative, once per stack)."""
    total = 0
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    return StackProfile(total, own, anywhere)


def top_table(profile: StackProfile, us_per_update: float, *, top: int = 12) -> str:
    """The busiest functions by self and by cumulative samples, as markdown."""
    lines = [
        "| self % | self µs/update | function (self) "
        "| cum % | cum µs/update | function (cumulative) |",
        "|---|---|---|---|---|---|",
    ]
    own = profile.self_counts.most_common(top)
    cumulative = [
        (name, count)
        for name, count in profile.cumulative.most_common(top * 4)
        if not SCAFFOLD.search(name)  # frames (nearly) every sample passes through
    ][:top]
    for n in range(max(len(own), len(cumulative))):
        cells: list[str] = []
        for pairs in (own, cumulative):
            if n < len(pairs):
                name, count = pairs[n]
                share = count / profile.samples if profile.samples else 0.0
                cells += [f"{share * 100:.1f}", f"{share * us_per_update:.0f}", f"`{name}`"]
            else:
                cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def window_cores(timeline: list[Mapping[str, Any]], start: float, end: float) -> dict[str, float]:
    inside = [p for p in timeline if start < float(p["wall"]) <= end]
    names = {k for p in inside for k in p if k.endswith(".cores")}
    return {
        k.removesuffix(".cores"): round(sum(float(p.get(k, 0.0)) for p in inside) / len(inside), 4)
        for k in sorted(names)
    }


# -- runs ---------------------------------------------------------------------------------------


async def load(args: argparse.Namespace, console: Console) -> Path:
    from simulator.system import SECRET, bench_system

    spy = py_spy()
    scenario = SCENARIOS[args.scenario]
    rate, config = step_configs(scenario, args, "project")[0]
    out = PROFILES / f"{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    recorders: list[asyncio.subprocess.Process] = []
    window: dict[str, float] = {}
    async with bench_system("prof") as cluster:
        services = {
            name: service.process.pid
            for name, service in cluster.services.items()
            if service.process is not None
        }
        pids = {**services, **infra_pids(ROOT / ".local" / "run")}
        target = Target("project", (cluster.gateway_url(0), cluster.gateway_url(1)), secret=SECRET)

        async def record(at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.time()))
            window["start"] = time.time()
            for name in PYTHON_SERVICES:
                command = [
                    spy,
                    "record",
                    "--pid",
                    str(services[name]),
                    "--duration",
                    str(args.record),
                    "--rate",
                    str(args.rate),
                    "--nonblocking",
                    "--function",
                    "--format",
                    "raw",
                    "--output",
                    str(out / f"{name}.txt"),
                ]
                with (out / f"{name}.log").open("wb") as log:
                    recorders.append(
                        await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
                    )

        tasks: list[asyncio.Task[None]] = []

        def on_schedule(drive_at: float, drive_end: float) -> None:
            tasks.append(asyncio.create_task(record(drive_at + args.warmup)))

        result = await measured(
            target, config, args.cross_pct, pids, console, f"profile {rate:.0f}/s", on_schedule
        )
        await asyncio.gather(*tasks)
        for recorder in recorders:
            await recorder.wait()
        window["end"] = window.get("start", 0.0) + args.record
    result["profile_window"] = window
    result["py_spy"] = {"rate_hz": args.rate, "record_s": args.record, "warmup_s": args.warmup}
    (out / "result.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    summary = summarise(out)
    (out / "summary.md").write_text(summary)
    print(summary)
    console.print(f"wrote {out}")
    return out


def summarise(out: Path) -> str:
    result = json.loads((out / "result.json").read_text())
    window = result.get("profile_window") or {}
    timeline = result["resources_timeline"]
    cores = window_cores(timeline, window.get("start", 0.0), window.get("end", 0.0))
    if not cores:
        cores = result["resources"]["load_phase_cores"]
    rate = float(result["updates_per_s"])
    lines = [
        f"# {out.name}: {result['config']['students']:,} students, {rate:,} updates/s; "
        f"p50 {result['delivery']['latency_ms']['p50']} ms, p99 "
        f"{result['delivery']['latency_ms']['p99']} ms",
        "",
        "| process | cores | µs CPU / update | py-spy samples |",
        "|---|---|---|---|",
    ]
    profiles: dict[str, StackProfile] = {}
    for name in PYTHON_SERVICES:
        path = out / f"{name}.txt"
        if path.exists():
            profiles[name] = parse_collapsed(path.read_text(errors="replace").splitlines())
    server = [*PYTHON_SERVICES, "kafka", "dynamodb", "redis"]
    for name in server:
        if name in cores:
            samples = profiles[name].samples if name in profiles else ""
            lines.append(
                f"| {name} | {cores[name]:.3f} | {cores[name] / rate * 1e6:.0f} | {samples} |"
            )
    total = sum(cores.get(name, 0.0) for name in server)
    lines.append(f"| **all server processes** | {total:.3f} | {total / rate * 1e6:.0f} | |")
    for name, profile in profiles.items():
        us = cores.get(name, 0.0) / rate * 1e6
        lines += ["", f"## {name}: {us:.0f} µs CPU per update", "", top_table(profile, us)]
    return "\n".join(lines) + "\n"


async def idle(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from simulator.system import bench_system

    async with bench_system("idle") as cluster:
        sampler = ResourceSampler()
        for name, service in cluster.services.items():
            if service.process is not None:
                sampler.add(name, service.process.pid)
        for name, pid in infra_pids(ROOT / ".local" / "run").items():
            sampler.add(name, pid)
        await asyncio.sleep(args.settle)
        sampling = asyncio.create_task(sampler.run())
        await asyncio.sleep(args.duration)
        sampling.cancel()
    report = sampler.report()
    lines = ["| process | cores idle | RSS MiB |", "|---|---|---|"]
    python = 0.0
    for name, process in report["processes"].items():
        lines.append(f"| {name} | {process['cpu_cores_mean']:.3f} | {process['rss_mib_end']:.0f} |")
        if name in PYTHON_SERVICES:
            python += process["cpu_cores_mean"]
    lines.append(f"| **Python services together** | {python:.3f} | |")
    print("\n".join(lines))
    out = PROFILES / f"idle-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    console.print(f"wrote {out}")
    return report


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(
        prog="python -m simulator.profile_services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="S2")
    p.add_argument("--duration", type=float, default=150.0)
    p.add_argument("--record", type=int, default=60, help="s of py-spy recording")
    p.add_argument("--warmup", type=float, default=20.0, help="s into sending before recording")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cross-pct", type=int, default=70)
    p.add_argument("--students", type=int, default=None, help="override (smoke runs)")
    p.add_argument("--rates", type=float, nargs=1, default=None, help="override, updates/s")
    p.add_argument("--window", type=float, default=None, help="join window, s")
    i = sub.add_parser("idle")
    i.add_argument("--duration", type=float, default=60.0)
    i.add_argument("--settle", type=float, default=10.0, help="s after start before sampling")
    s = sub.add_parser("summarise")
    s.add_argument("run", type=Path)
    args = top.parse_args(argv)
    tune_gc(GcPolicy())
    console = Console(stderr=True)
    if args.command == "load":
        uvloop.run(load(args, console))
    elif args.command == "idle":
        uvloop.run(idle(args, console))
    else:
        print(summarise(args.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
