"""Benchmark scenarios against the whole system, one command each.

    .venv/bin/python -m simulator.bench paper-stress [--duration 60]
    .venv/bin/python -m simulator.bench join-storm [--students 10000 --window 60]
    .venv/bin/python -m simulator.bench saturation [--students 1000 --step-duration 20]
    .venv/bin/python -m simulator.bench router [--events 200000]
    .venv/bin/python -m simulator.bench exam-peak [--duration 300]
    .venv/bin/python -m simulator.bench side-by-side --scenario S1|S2|S3 [--duration N]

Each run writes ``bench/results/<scenario>-<time>.json``: delivery accounting (latency
percentiles, lost, superseded, duplicated, out of order), connect results, throughput per
second, and CPU/RSS of every process (services, Kafka, Redis, DynamoDB Local, simulator).
Needs the local stack (``infra/stack up``); for 10,000 students raise ``ulimit -n``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console
from rich.live import Live

from adapters.gc_tuning import GcPolicy, tune_gc
from simulator import side_by_side
from simulator.accounting import account, connect_summary, json_safe
from simulator.launcher import Cluster
from simulator.loadgen import LoadConfig, LoadOutcome, Progress, run_load
from simulator.resources import ResourceSampler, infra_pids
from simulator.system import ROOT, SECRET, bench_system

RESULTS = ROOT / "bench" / "results"


def summarise(outcome: LoadOutcome) -> dict[str, Any]:
    delivery = account(
        outcome.sent, outcome.receipts, outcome.watching, start_ms=outcome.drive_at_ms
    ).to_json()
    sent = sum(len(seqs) for seqs in outcome.sent.values())
    window_s = (outcome.drive_end_ms - outcome.drive_at_ms) / 1000
    return {
        "config": asdict(outcome.config),
        "updates_sent": sent,
        "updates_per_s": round(sent / window_s, 1) if window_s else 0.0,
        "unacknowledged_at_end": outcome.unacked,
        "student_errors": outcome.student_errors,
        "connect": connect_summary(outcome.connects),
        "delivery": delivery,
        "throughput": outcome.throughput(),
    }


async def measured_load(
    cluster: Cluster, config: LoadConfig, console: Console, *, label: str
) -> dict[str, Any]:
    """One load run with resources sampled and a live progress line."""
    sampler = ResourceSampler()
    for name, service in cluster.services.items():
        if service.process is not None:
            sampler.add(name, service.process.pid)
    for name, pid in infra_pids(ROOT / ".local" / "run").items():
        sampler.add(name, pid)
    sampler.add("simulator-parent", os.getpid())
    sampling = asyncio.create_task(sampler.run())
    started = time.monotonic()
    live = Live("", console=console, refresh_per_second=2, transient=True)

    def show(progress: Progress) -> None:
        for n, pid in enumerate(progress.pids()):
            if f"simulator-worker-{n}" not in sampler.tracks:
                sampler.add(f"simulator-worker-{n}", pid)
        t = progress.totals()
        busy = sampler.timeline[-1] if sampler.timeline else {}
        hottest = sorted(((v, k) for k, v in busy.items() if k.endswith(".cores")), reverse=True)[
            :3
        ]
        live.update(
            f"[bold]{label}[/] {progress.phase} {time.monotonic() - started:5.0f}s  "
            f"connected {t['connected']} failed {t['failed']}  sent {t['sent']}  "
            f"rows received {t['received']}  hottest: "
            + ", ".join(f"{k.removesuffix('.cores')} {v:.2f}" for v, k in hottest)
        )

    try:
        with live:
            outcome = await run_load(
                config, (cluster.gateway_url(0), cluster.gateway_url(1)), SECRET, show
            )
    finally:
        sampling.cancel()
    own = tuple(name for name in sampler.tracks if name.startswith("simulator"))
    result = summarise(outcome)
    result["resources"] = sampler.report(own)
    drive = sampler.window_cores(outcome.drive_at_ms / 1000, outcome.drive_end_ms / 1000)
    result["resources"]["load_phase_cores"] = drive
    result["resources"]["load_phase_simulator_cores"] = round(
        sum(v for k, v in drive.items() if k.startswith("simulator")), 3
    )
    result["resources_timeline"] = sampler.timeline
    return result


def headline(result: dict[str, Any]) -> str:
    d = result["delivery"]
    lat = d["latency_ms"]
    c = result["connect"]
    res = result["resources"]
    return (
        f"{result['updates_per_s']} updates/s, lost {d['lost']}, dup {d['duplicates']}, "
        f"ooo {d['out_of_order']}, superseded {d['superseded_by_newer_state']}; latency ms "
        f"p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} p99.9 {lat['p99.9']} "
        f"max {lat['max']} mean {lat['mean']:.1f}; connects {c['succeeded']}/{c['attempted']} "
        f"p50 {c['connect_ms']['p50']:.0f} p99 {c['connect_ms']['p99']:.0f} ms; "
        f"simulator {res['simulator_cores_mean']} cores of {res['machine_busy_cores_mean']} busy "
        f"(load phase: {res['load_phase_simulator_cores']}); load-phase cores: "
        + ", ".join(f"{k} {v}" for k, v in res["load_phase_cores"].items())
    )


def write(scenario: str, result: dict[str, Any]) -> Path:
    """The JSON result, and its plot beside it (same name, .png)."""
    # Imported here: spawned load workers re-import this module and need no matplotlib.
    from simulator.plot import plot_result

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    safe = json_safe(result)
    path.write_text(json.dumps(safe, indent=1) + "\n")
    try:
        print(f"plotted {plot_result(safe, path.with_suffix('.png'))}", file=sys.stderr)
    except ValueError as error:  # the JSON is written either way; the plot can be redone
        print(f"no plot for {path}: {error}", file=sys.stderr)
    return path


async def single(scenario: str, config: LoadConfig, console: Console) -> dict[str, Any]:
    async with bench_system(scenario) as cluster:
        result = await measured_load(cluster, config, console, label=scenario)
    console.print(headline(result))
    return {"scenario": scenario, **result}


async def saturation(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Same students, rising per-student rate, until p99 > budget or any loss."""
    steps: list[dict[str, Any]] = []
    sustainable = 0.0
    async with bench_system("saturation") as cluster:
        for total_rate in args.rates:
            config = LoadConfig(
                students=args.students,
                proctors=args.proctors,
                rate_per_student=total_rate / args.students,
                duration_s=args.step_duration,
                join_window_s=5.0,
                workers=args.workers,
                seed=len(steps) + 1,
                tag=f"s{len(steps)}-",
            )
            result = await measured_load(cluster, config, console, label=f"{total_rate}/s")
            console.print(f"target {total_rate}/s: {headline(result)}")
            d = result["delivery"]
            ok = d["lost"] == 0 and (d["latency_ms"]["p99"] or 1e9) <= args.p99_budget_ms
            steps.append({"target_updates_per_s": total_rate, "ok": ok, **result})
            if ok and all(step["ok"] for step in steps):
                sustainable = result["updates_per_s"]
            if not ok and not args.all_steps:
                break
    return {
        "scenario": "saturation",
        "p99_budget_ms": args.p99_budget_ms,
        "highest_sustainable_updates_per_s": sustainable,
        "steps": steps,
    }


def router(args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(ROOT / "bench" / "router_throughput.py"),
        "--events",
        str(args.events),
        "--partitions",
        str(args.partitions),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = {"scenario": "router", "command": command, **json.loads(out.stdout)}
    return result


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m simulator.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="scenario", required=True)

    def load(
        name: str, students: int, proctors: int, duration: float, window: float, per_exam: int
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.add_argument("--students", type=int, default=students)
        p.add_argument("--proctors", type=int, default=proctors)
        p.add_argument("--students-per-exam", type=int, default=per_exam)
        p.add_argument("--rate", type=float, default=0.2, help="updates per student per second")
        p.add_argument("--duration", type=float, default=duration)
        p.add_argument("--window", type=float, default=window, help="join window, s")
        p.add_argument("--workers", type=int, default=2)
        return p

    load("paper-stress", 1000, 20, 60.0, 10.0, 50)
    load("exam-peak", 10_000, 200, 300.0, 60.0, 50)
    load("join-storm", 10_000, 1, 10.0, 60.0, 10_000)
    load("small", 40, 2, 15.0, 2.0, 20)
    sat = sub.add_parser("saturation")
    sat.add_argument("--students", type=int, default=1000)
    sat.add_argument("--proctors", type=int, default=20)
    sat.add_argument("--workers", type=int, default=2)
    sat.add_argument("--step-duration", type=float, default=20.0)
    sat.add_argument("--p99-budget-ms", type=float, default=100.0)
    sat.add_argument(
        "--rates", type=float, nargs="+", default=[100, 200, 300, 500, 750, 1000, 1500, 2000, 3000]
    )
    sat.add_argument(
        "--all-steps",
        action="store_true",
        help="keep raising the rate after a failed step (to see the curve)",
    )
    side_by_side.add_parser(sub)
    rt = sub.add_parser("router")
    rt.add_argument("--events", type=int, default=200_000)
    rt.add_argument("--partitions", type=int, default=12)
    return top


def main() -> None:
    args = parser().parse_args()
    # The parent hosts the proctors and keeps every receipt: a full collection over that
    # heap would pause their receive loops and be measured as delivery latency.
    tune_gc(GcPolicy())
    console = Console(stderr=True)
    if args.scenario == "side-by-side":  # writes its own JSON, PNG and tables
        side_by_side.main(args, console)
        return
    result: dict[str, Any]
    if args.scenario == "router":
        result = router(args)
    elif args.scenario == "saturation":
        result = uvloop.run(saturation(args, console))
    else:
        config = LoadConfig(
            students=args.students,
            proctors=args.proctors,
            students_per_exam=args.students_per_exam,
            rate_per_student=args.rate,
            duration_s=args.duration,
            join_window_s=args.window,
            workers=args.workers,
        )
        if args.scenario == "join-storm":
            config = replace(config, join_only=True, submit=False)
        result = uvloop.run(single(args.scenario, config, console))
    result["command"] = " ".join(sys.argv)
    result["machine"] = {"cpus": os.cpu_count(), "uname": " ".join(os.uname())}
    path = write(args.scenario, result)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
