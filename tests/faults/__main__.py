"""The fault suite: ``python -m tests.faults`` (or ``scripts/faults``).

Starts (or reuses) the fault instance of Kafka, DynamoDB Local and Redis (``tests/faults/infra.py``:
its own directory and ports, never the shared stack; for ``broker-kill`` the three-broker
fault cluster), then runs each fault one after the other on a fresh system of two gateways,
router, status and notifier as processes, and writes ``results.json`` and ``results.md`` (one
row per fault) into ``--out``. At the end it stops the instances it started (not one that was
already running), unless ``--keep-infra``.

    python -m tests.faults                      # the long suite: every fault, 200 students
    python -m tests.faults --ci                 # the short one CI runs (pytest: tests/faults)
    python -m tests.faults --faults kafka-stall-6,redis-flushall --students 100
    python -m tests.faults --faults broker-kill     # a broker of three SIGKILLed, 200 students
    python -m tests.faults --source /work/before   # services from another checkout

Exit status: 0 when every property held in every run, 1 otherwise (the table says which).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from tests.faults.harness import CI, CI_SUITE, FAULTS, LONG, LONG_SUITE, FaultRun
from tests.faults.infra import ROOT, FaultInfra
from tests.faults.report import markdown, summary_line


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--ci", action="store_true", help="the short suite and profile CI runs")
    parser.add_argument(
        "--faults", help=f"comma-separated subset of: {', '.join(FAULTS)} (default: the suite)"
    )
    parser.add_argument("--students", type=int, help="students per run (at most 200)")
    parser.add_argument("--source", type=Path, help="run the services from this checkout")
    parser.add_argument(
        "--out", type=Path, help="results directory (default .local/faults/results/<time>)"
    )
    parser.add_argument(
        "--keep-infra", action="store_true", help="leave the fault instances running"
    )
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    profile = CI if args.ci else LONG
    if args.students:
        if args.students > 200:
            raise SystemExit("at most 200 students: this box is shared")
        profile = dataclasses.replace(profile, students=args.students)
    names = args.faults.split(",") if args.faults else list(CI_SUITE if args.ci else LONG_SUITE)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults: {', '.join(unknown)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: Path = args.out or ROOT / ".local" / "faults" / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    instances = Instances()
    source = args.source.resolve() if args.source else None
    meta: dict[str, Any] = {
        "profile": dataclasses.asdict(profile),
        "source": str(source or ROOT),
        "started": stamp,
    }
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        for name in names:
            infra = await instances.get(FAULTS[name].brokers)
            print(f"== {name} ({FAULTS[name].label}), {profile.students} students")
            run = FaultRun(
                FAULTS[name], profile, infra, log_root=out / "logs", source=source, seed=args.seed
            )
            row = await run.run()
            rows.append(row)
            print("  " + summary_line(row))
            _write(out, meta | {"wall_s": round(time.monotonic() - began, 1)}, rows)
    finally:
        instances.close(keep=args.keep_infra)
    print()
    print(markdown(rows))
    print(f"results: {out}/results.json, {out}/results.md; total {time.monotonic() - began:.0f} s")
    return 0 if all(not r["violations"] for r in rows) else 1


class Instances:
    """The fault instances this invocation uses, started when a fault first needs one: the
    single-broker one, and the three-broker cluster for broker-kill."""

    def __init__(self) -> None:
        self._up: dict[int, FaultInfra] = {}
        self._started: list[FaultInfra] = []

    async def get(self, brokers: int) -> FaultInfra:
        if brokers in self._up:
            return self._up[brokers]
        infra = FaultInfra.from_env() if brokers == 1 else FaultInfra.cluster_from_env()
        kind = "fault instance" if brokers == 1 else f"fault cluster ({brokers} brokers)"
        print(
            f"{kind}: Kafka {infra.kafka_bootstrap}, Redis {infra.redis_url}, "
            f"DynamoDB {infra.dynamodb_endpoint} ({infra.local_dir})"
        )
        was_running = await asyncio.to_thread(infra.running)
        print((await infra.up_async()).strip())
        if not was_running:
            self._started.append(infra)
        self._up[brokers] = infra
        return infra

    def close(self, *, keep: bool) -> None:
        for infra in self._up.values():
            infra.resume_all()
        if not keep:
            for infra in self._started:
                print(infra.down().strip())


def _write(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    (out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (out / "results.md").write_text(markdown(rows))


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse(None))))
