"""This project and the seed paper's design, side by side, same schedule, same accounting.

    .venv/bin/python -m simulator.bench side-by-side --scenario S1 [--duration 90]
    .venv/bin/python -m simulator.bench side-by-side --scenario S2 [--duration 150]
    .venv/bin/python -m simulator.bench side-by-side --scenario S3 [--step-duration 25]
    .venv/bin/python -m simulator.side_by_side bench/results/side-by-side-S1-<time>.json  # re-plot

Workload (issue 10): exams of 50 students, one proctor per exam, 70 % of deliveries crossing
nodes, every student one update per interval with ±20 % jitter (one frame per update:
progress, sometimes an answer, sometimes away/active; no submit burst at the end).

- S1: 1,000 students, 200 updates/s; S2: 10,000 students and 200 proctors, 2,000 updates/s;
  S3: 1,000 students, 500, 1,000, 2,000 and 4,000 updates/s, one step each.
- *This project*: two gateways, router, status, notifier as processes on fresh topics, the
  real protocol (acks, resends, a heartbeat after 5 s without any other frame). Each exam's
  proctor is on gateway ``exam % 2``; 35 of its 50 students are on the other gateway.
- *Seed design* (``simulator.peer_seed``): ``node server.js`` with two cluster workers and
  its own ``redis-server``; the same placement, on workers instead of gateways.

Both runs use the same students, exams, per-student random streams (so the same frames at
the same offsets from the start of sending), the same worker processes and the same
accounting (``simulator.accounting``, times in microseconds). CPU is the CPU-seconds of all
server-side processes over the sending window per 1,000 updates sent: for this project the
five services plus Kafka, Redis and DynamoDB Local; for the peer its primary, workers and
Redis. RSS is the sum of those processes' peak resident memory. The two systems run back to
back (``--order``), never at once; the other system's processes are idle meanwhile (this
project's infrastructure stays up during the peer's run: a few % of a core).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import multiprocessing
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
import uvloop
from rich.console import Console

from adapters.gc_tuning import GcPolicy, tune_gc
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from simulator.accounting import (
    ConnectResult,
    DeliveryReport,
    Receipt,
    account,
    connect_summary,
    histogram,
    json_safe,
    per_second,
)
from simulator.clients import StudentBot, client_session
from simulator.loadgen import LoadConfig, RecordingProctor
from simulator.peer_seed import PeerProctor, PeerServer, PeerStudent, wall_us, worker_of_ports
from simulator.resources import ResourceSampler, infra_pids

System = Literal["project", "seed"]
SYSTEMS: tuple[System, ...] = ("project", "seed")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROJECT_SERVER = ("gateway-0", "gateway-1", "router", "status", "notifier")
PROJECT_INFRA = ("kafka", "redis", "dynamodb")
# Sub-millisecond buckets too (the peer's median is well under 1 ms): 0.05 ms to 31.6 s,
# ten per decade.
FINE_EDGES_MS: tuple[float, ...] = tuple(round(10 ** (i / 10), 4) for i in range(-13, 46))
TOTAL_QUESTIONS = 20
_FIELDS = 1  # per worker: its pid
_counters: Any = None


@dataclass(frozen=True)
class Scenario:
    students: int
    rates: tuple[float, ...]  # total updates/s, one step each
    duration_s: float
    join_window_s: float
    students_per_exam: int = 50


SCENARIOS: dict[str, Scenario] = {
    "S1": Scenario(1_000, (200.0,), 90.0, 10.0),
    "S2": Scenario(10_000, (2_000.0,), 150.0, 60.0),
    "S3": Scenario(1_000, (500.0, 1_000.0, 2_000.0, 4_000.0), 25.0, 5.0),
}


# -- placement and schedule (pure) -------------------------------------------------------------


def proctor_node(exam: int, nodes: int = 2) -> int:
    """Exams alternate between the nodes for their proctor."""
    return exam % nodes


def crosses(index_in_exam: int, cross_pct: int) -> bool:
    """Whether the ``index_in_exam``-th student of an exam sits on another node than its
    proctor: exactly ``cross_pct`` of every 100 consecutive students, spread evenly."""
    return (index_in_exam + 1) * cross_pct // 100 > index_in_exam * cross_pct // 100


def student_node(n: int, per_exam: int, cross_pct: int = 70, nodes: int = 2) -> int:
    exam, index = divmod(n, per_exam)
    home = proctor_node(exam, nodes)
    return (home + 1) % nodes if crosses(index, cross_pct) else home


def exam_name(exam: int, tag: str) -> str:
    return f"{tag}exam-{exam:04d}"


def attempt_name(n: int, tag: str) -> str:
    return f"{tag}a{n:06d}"


@dataclass
class StudentState:
    status: str = "active"
    question: int = 1
    answered: int = 0


def next_action(state: StudentState, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """One update (one frame): back from away, or away (8 %), an answer (22 %, while any
    question is left), else progress; the same draws for both systems."""
    roll = rng.random()
    if state.status == "away" or roll < 0.08:
        state.status = "active" if state.status == "away" else "away"
        return "status", {"status": state.status}
    if roll < 0.3 and state.answered < TOTAL_QUESTIONS:
        fields: dict[str, Any] = {
            "question": state.question,
            "answer": f"choice-{rng.randint(1, 4)}",
        }
        state.answered += 1
        state.question = min(TOTAL_QUESTIONS, state.question + 1)
        return "answer", fields
    return "progress", {
        "question_current": state.question,
        "answered": state.answered,
        "total": TOTAL_QUESTIONS,
    }


def student_rng(seed: int, n: int) -> random.Random:
    """Each student's own stream: the same for both systems whichever worker hosts it."""
    return random.Random(seed * 1_000_003 + n)


def in_ms(report: DeliveryReport) -> DeliveryReport:
    """``account`` over microsecond times gives microseconds: the same report in ms."""
    report.latencies_ms = [v / 1000 for v in report.latencies_ms]
    report.inbound_ms = [v / 1000 for v in report.inbound_ms]
    report.sent_at_ms = [v // 1000 for v in report.sent_at_ms]
    report.start_ms //= 1000
    return report


def server_cost(
    load_phase_cores: Mapping[str, float],
    processes: Mapping[str, Mapping[str, Any]],
    server: Iterable[str],
    updates_per_s: float,
) -> dict[str, Any]:
    """Cores, CPU-seconds per 1,000 updates and summed peak RSS of the server-side processes."""
    names = [name for name in server if name in processes]
    cores = sum(float(load_phase_cores.get(name, 0.0)) for name in names)
    rss = sum(float(processes[name].get("rss_mib_peak") or 0.0) for name in names)
    return {
        "processes": names,
        "cores": round(cores, 3),
        "cpu_s_per_1000_updates": round(cores / updates_per_s * 1000, 3) if updates_per_s else None,
        "cpu_us_per_update": {
            name: round(float(load_phase_cores.get(name, 0.0)) / updates_per_s * 1e6, 1)
            for name in names
        }
        if updates_per_s
        else {},
        "rss_mib": round(rss, 1),
    }


def ratios(ours: Mapping[str, Any], seed: Mapping[str, Any]) -> dict[str, float | None]:
    """This project's figure over the seed design's, per headline number."""

    def ratio(a: Any, b: Any) -> float | None:
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
            return None
        if math.isnan(a) or math.isnan(b):
            return None
        return round(a / b, 1)

    out: dict[str, float | None] = {}
    for q in ("p50", "p99", "p99.9"):
        out[q] = ratio(ours["delivery"]["latency_ms"].get(q), seed["delivery"]["latency_ms"].get(q))
    out["cpu_s_per_1000_updates"] = ratio(
        ours["server"]["cpu_s_per_1000_updates"], seed["server"]["cpu_s_per_1000_updates"]
    )
    out["rss"] = ratio(ours["server"]["rss_mib"], seed["server"]["rss_mib"])
    return out


# -- clients with microsecond clocks -----------------------------------------------------------


@dataclass
class ProjectStudent(StudentBot):
    """The real student protocol (acks, resends, heartbeats), send times in microseconds."""

    node: int = 0

    async def send(self, kind: str, **fields: Any) -> int:
        self.seq += 1
        event_id = f"{self.attempt}-{self.seq}-{uuid.uuid4().hex[:6]}"
        sent = wall_us()
        frame = orjson.dumps(
            {"type": kind, "id": event_id, "seq": self.seq, "ts": sent // 1000, **fields}
        )
        self.unacked[event_id] = frame
        self.sent_at[self.seq] = sent
        await self._transmit(frame)
        return self.seq


@dataclass
class ProjectProctor(RecordingProctor):
    """Every live row as it arrived, in microseconds (the peer's median is a quarter of a ms)."""

    units_per_ms: ClassVar[int] = 1000

    def _now(self) -> int:
        return wall_us()


# -- the load: students in worker processes, proctors in the parent ---------------------------


@dataclass(frozen=True)
class Target:
    system: System
    urls: tuple[str, ...]  # project: one gateway URL per node; seed: its one URL
    secret: str = ""
    port: int = 0  # seed: the shared port
    worker_pids: tuple[int, ...] = ()  # seed: the cluster workers, by node

    @property
    def nodes(self) -> int:
        """Where students and proctors sit: the project's gateways, the seed's two workers."""
        return len(self.urls) if self.system == "project" else 2


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    target: Target
    students: tuple[tuple[int, float], ...]  # (student number, join offset)
    config: LoadConfig
    cross_pct: int
    join_at: float
    drive_at: float
    drive_end: float


@dataclass
class WorkerResult:
    sent: dict[str, dict[int, int]]
    connects: list[ConnectResult]
    unacked: int
    errors: int
    misplaced: int
    placement_s: float


Bot = ProjectStudent | PeerStudent


def _init_worker(counters: Any) -> None:
    global _counters
    _counters = counters
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # die with the parent


def run_worker(plan: WorkerPlan) -> WorkerResult:
    _counters[plan.index * _FIELDS] = os.getpid()
    tune_gc(GcPolicy())
    return uvloop.run(_worker(plan))


async def _sleep_until(at: float) -> None:
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def place_on_workers(
    bots: Sequence[PeerStudent | PeerProctor],
    target: Target,
    reconnect: Callable[[PeerStudent | PeerProctor], Awaitable[None]],
    *,
    rounds: int = 40,
) -> list[PeerStudent | PeerProctor]:
    """Reconnect every client the cluster's round robin put on the other worker than its
    ``node`` (up to ``rounds`` times); returns those not seen on their worker in the last
    check (the ones reconnected after it included)."""
    wrong: list[PeerStudent | PeerProctor] = list(bots)
    for _ in range(rounds):
        where = worker_of_ports(target.port, list(target.worker_pids))
        wrong = [bot for bot in wrong if where.get(bot.local_port or -1) != bot.node]
        if not wrong:
            return []
        await asyncio.gather(*(bot.close() for bot in wrong))
        await asyncio.gather(*(reconnect(bot) for bot in wrong), return_exceptions=True)
    return wrong


async def _worker(plan: WorkerPlan) -> WorkerResult:
    config, target = plan.config, plan.target
    codec = TokenCodec(target.secret) if target.system == "project" else None
    connects: list[ConnectResult] = []
    bots: dict[int, Bot] = {}

    def make(n: int) -> Bot:
        exam = n // config.students_per_exam
        node = student_node(n, config.students_per_exam, plan.cross_pct, target.nodes)
        attempt = attempt_name(n, config.tag)
        if codec is not None:
            identity = StudentIdentity(
                role="student", sub=f"s{n:06d}", exam=exam_name(exam, config.tag), attempt=attempt
            )
            return ProjectStudent(target.urls[node], codec.issue(identity), attempt, node=node)
        return PeerStudent(target.urls[0], attempt, exam_name(exam, config.tag), node=node)

    async def join(n: int, offset: float) -> None:
        bot = make(n)
        await _sleep_until(plan.join_at + offset)
        started = time.perf_counter()
        try:
            await bot.connect(http, timeout_s=config.connect_timeout_s)
        except Exception as error:  # a failed join is a result, not a crash
            ms = (time.perf_counter() - started) * 1e3
            connects.append(ConnectResult(False, ms, type(error).__name__))
            with contextlib.suppress(Exception):
                await bot.close()
            return
        connects.append(ConnectResult(True, (time.perf_counter() - started) * 1e3))
        bots[n] = bot

    async def drive(n: int, bot: Bot) -> None:
        rng = student_rng(config.seed, n)
        state = StudentState()
        interval = 1.0 / config.rate_per_student
        at = plan.drive_at + rng.uniform(0, interval)
        while at < plan.drive_end:
            await _sleep_until(at)
            kind, fields = next_action(state, rng)
            await bot.send(kind, **fields)
            at += interval * rng.uniform(0.8, 1.2)

    async def reconnect(bot: PeerStudent | PeerProctor) -> None:
        await bot.connect(http, timeout_s=config.connect_timeout_s)

    placed: set[int] = set()
    joining = True

    async def place_while_joining() -> None:
        """Once a second, one placement round over the students joined since: spread over
        the join window instead of a reconnect storm at its end."""
        while joining:
            await asyncio.sleep(1.0)
            todo: dict[int, PeerStudent | PeerProctor] = {
                n: bot
                for n, bot in list(bots.items())
                if n not in placed and isinstance(bot, PeerStudent)
            }
            if not todo:
                continue
            wrong = await place_on_workers(list(todo.values()), target, reconnect, rounds=1)
            placed.update(n for n, bot in todo.items() if bot not in wrong)

    async with client_session() as http:
        placer = asyncio.create_task(place_while_joining()) if target.system == "seed" else None
        await asyncio.gather(*(join(n, offset) for n, offset in plan.students))
        joining = False
        if placer is not None:
            await placer
        misplaced = 0
        placing = time.perf_counter()
        if target.system == "seed":
            peers = [
                bot for n, bot in bots.items() if n not in placed and isinstance(bot, PeerStudent)
            ]
            misplaced = len(await place_on_workers(peers, target, reconnect))
        placement_s = time.perf_counter() - placing
        await asyncio.gather(*(drive(n, bot) for n, bot in sorted(bots.items())))
        await asyncio.sleep(config.drain_s)
        result = WorkerResult(
            sent={bot.attempt: bot.sent_at for bot in bots.values()},
            connects=connects,
            unacked=sum(len(bot.unacked) for bot in bots.values() if isinstance(bot, StudentBot)),
            errors=sum(len(bot.errors) for bot in bots.values()),
            misplaced=misplaced,
            placement_s=round(placement_s, 2),
        )
        await asyncio.gather(*(bot.close() for bot in bots.values()), return_exceptions=True)
    return result


@dataclass
class Outcome:
    system: System
    config: LoadConfig
    sent: dict[str, dict[int, int]]  # microseconds
    receipts: dict[str, list[Receipt]]  # microseconds
    watching: dict[str, list[str]]
    connects: list[ConnectResult]
    unacked: int
    student_errors: int
    misplaced: int
    placement_s: list[float]
    drive_at: float
    drive_end: float
    worker_pids: list[int]


async def run_load(
    target: Target,
    config: LoadConfig,
    cross_pct: int,
    on_workers: Callable[[list[int]], None] | None = None,
    on_schedule: Callable[[float, float], None] | None = None,
) -> Outcome:
    """Proctors connect (and watch) first, then the workers join, drive and drain."""
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", config.workers * _FIELDS, lock=False)
    codec = TokenCodec(target.secret) if target.system == "project" else None
    proctors: list[ProjectProctor | PeerProctor] = []
    watching: dict[str, list[str]] = {}
    async with client_session() as http:
        for exam in range(config.exams):
            name = exam_name(exam, config.tag)
            node = proctor_node(exam, target.nodes)
            proctor: ProjectProctor | PeerProctor
            if codec is not None:
                token = codec.issue(ProctorIdentity(role="proctor", sub=f"p{exam}", exams=(name,)))
                proctor = ProjectProctor(target.urls[node], token)
                await proctor.connect(http, timeout_s=config.connect_timeout_s)
                await proctor.watch(name, timeout_s=config.connect_timeout_s)
            else:
                proctor = PeerProctor(target.urls[0], name, node=node)
                await proctor.connect(http, timeout_s=config.connect_timeout_s)
            proctors.append(proctor)
            first = exam * config.students_per_exam
            last = min(config.students, first + config.students_per_exam)
            watching[str(exam)] = [attempt_name(n, config.tag) for n in range(first, last)]
        if target.system == "seed":

            async def reconnect(bot: PeerStudent | PeerProctor) -> None:
                await bot.connect(http, timeout_s=config.connect_timeout_s)

            peers = [p for p in proctors if isinstance(p, PeerProctor)]
            left = await place_on_workers(peers, target, reconnect)
            if left:
                raise RuntimeError(f"{len(left)} proctors could not be placed on their worker")

        spread = random.Random(config.seed)
        join_at = time.time() + 3.0  # spawned workers import aiohttp & co. first
        drive_at = join_at + config.join_window_s + config.settle_s
        drive_end = drive_at + config.duration_s
        if on_schedule is not None:
            on_schedule(drive_at, drive_end)
        shares: list[list[tuple[int, float]]] = [[] for _ in range(config.workers)]
        for n in range(config.students):
            offset = config.join_window_s * (n + spread.random()) / config.students
            shares[n % config.workers].append((n, offset))
        plans = [
            WorkerPlan(i, target, tuple(share), config, cross_pct, join_at, drive_at, drive_end)
            for i, share in enumerate(shares)
        ]
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(
            config.workers, mp_context=context, initializer=_init_worker, initargs=(counters,)
        ) as pool:
            futures = [loop.run_in_executor(pool, run_worker, plan) for plan in plans]
            waiting = asyncio.ensure_future(asyncio.gather(*futures))
            reported = False
            while not waiting.done():
                pids = [int(v) for v in counters if v]
                if on_workers is not None and not reported and len(pids) == config.workers:
                    on_workers(pids)
                    reported = True
                await asyncio.wait([waiting], timeout=0.5)
            results: list[WorkerResult] = waiting.result()
        worker_pids = [int(v) for v in counters if v]
        for proctor in proctors:
            await proctor.close()
    sent: dict[str, dict[int, int]] = {}
    for result in results:
        sent.update(result.sent)
    return Outcome(
        system=target.system,
        config=config,
        sent=sent,
        receipts={str(n): p.raw for n, p in enumerate(proctors)},
        watching=watching,
        connects=[c for r in results for c in r.connects],
        unacked=sum(r.unacked for r in results),
        student_errors=sum(r.errors for r in results),
        misplaced=sum(r.misplaced for r in results),
        placement_s=[r.placement_s for r in results],
        drive_at=drive_at,
        drive_end=drive_end,
        worker_pids=worker_pids,
    )


def crossing_share(config: LoadConfig, cross_pct: int) -> float:
    """The share of deliveries (student -> its exam's one proctor) that cross nodes."""
    crossing = sum(
        1
        for n in range(config.students)
        if student_node(n, config.students_per_exam, cross_pct)
        != proctor_node(n // config.students_per_exam)
    )
    return round(crossing / config.students, 3) if config.students else 0.0


def summarise(outcome: Outcome, cross_pct: int) -> dict[str, Any]:
    drive_at_us = int(outcome.drive_at * 1e6)
    report = in_ms(account(outcome.sent, outcome.receipts, outcome.watching, start_ms=drive_at_us))
    delivery = report.to_json()
    delivery["latency_histogram_fine"] = histogram(report.latencies_ms, FINE_EDGES_MS)
    sent = sum(len(seqs) for seqs in outcome.sent.values())
    window_s = outcome.drive_end - outcome.drive_at
    drive_at_ms = drive_at_us // 1000
    return {
        "system": outcome.system,
        "config": asdict(outcome.config),
        "crossing_share": crossing_share(outcome.config, cross_pct),
        "updates_sent": sent,
        "updates_per_s": round(sent / window_s, 1) if window_s else 0.0,
        "unacknowledged_at_end": outcome.unacked,
        "student_errors": outcome.student_errors,
        "misplaced_students": outcome.misplaced,
        "placement_s": outcome.placement_s,
        "connect": connect_summary(outcome.connects),
        "delivery": delivery,
        "throughput": {
            "sent_per_s": per_second(
                (us // 1000 for seqs in outcome.sent.values() for us in seqs.values()),
                drive_at_ms,
            ),
            "received_rows_per_s": per_second(
                (r.at_ms // 1000 for got in outcome.receipts.values() for r in got), drive_at_ms
            ),
        },
    }


async def measured(
    target: Target,
    config: LoadConfig,
    cross_pct: int,
    server_pids: Mapping[str, int],
    console: Console,
    label: str,
    on_schedule: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """One load run, every process's CPU and RSS sampled each second; ``on_schedule`` gets
    the wall-clock start and end of sending once they are fixed."""
    sampler = ResourceSampler()
    for name, pid in server_pids.items():
        sampler.add(name, pid)
    sampler.add("simulator-parent", os.getpid())
    sampling = asyncio.create_task(sampler.run())

    def on_workers(pids: list[int]) -> None:
        for n, pid in enumerate(pids):
            sampler.add(f"simulator-worker-{n}", pid)

    console.print(f"[bold]{label}[/]: {config.students} students, {config.exams} proctors")
    try:
        outcome = await run_load(target, config, cross_pct, on_workers, on_schedule)
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    result = summarise(outcome, cross_pct)
    own = tuple(name for name in sampler.tracks if name.startswith("simulator"))
    resources = sampler.report(own)
    drive = sampler.window_cores(outcome.drive_at, outcome.drive_end)
    resources["load_phase_cores"] = drive
    result["resources"] = resources
    result["resources_timeline"] = sampler.timeline
    result["server"] = server_cost(
        drive, resources["processes"], server_pids, result["updates_per_s"]
    )
    console.print(f"  {headline(result)}")
    return result


def headline(result: Mapping[str, Any]) -> str:
    d = result["delivery"]
    lat = d["latency_ms"]
    s = result["server"]
    return (
        f"{result['system']}: {result['updates_per_s']} updates/s, lost {d['lost']}, "
        f"superseded {d['superseded_by_newer_state']}, dup {d['duplicates']}; latency ms p50 "
        f"{_ms(lat['p50'])} p99 {_ms(lat['p99'])} p99.9 {_ms(lat['p99.9'])} max "
        f"{_ms(lat['max'])}; server {s['cores']} cores, "
        f"{s['cpu_s_per_1000_updates']} CPU-s/1000 updates, RSS {s['rss_mib']:.0f} MiB; "
        f"misplaced {result['misplaced_students']}"
    )


# -- the two systems --------------------------------------------------------------------------


def step_configs(
    scenario: Scenario, args: argparse.Namespace, system: System
) -> list[tuple[float, LoadConfig]]:
    students = args.students or scenario.students
    duration = args.duration or scenario.duration_s
    rates = tuple(args.rates) if args.rates else scenario.rates
    return [
        (
            rate,
            LoadConfig(
                students=students,
                proctors=-(-students // scenario.students_per_exam),
                students_per_exam=scenario.students_per_exam,
                rate_per_student=rate / students,
                duration_s=duration,
                join_window_s=args.window if args.window is not None else scenario.join_window_s,
                workers=args.workers,
                submit=False,
                seed=n + 1,
                tag=f"{system[0]}{n}-",
            ),
        )
        for n, rate in enumerate(rates)
    ]


async def run_project(
    scenario: Scenario, args: argparse.Namespace, console: Console
) -> list[dict[str, Any]]:
    from simulator.system import SECRET, bench_system

    steps: list[dict[str, Any]] = []
    async with bench_system(
        "sbs",
        gateways=args.gateways,
        replicas=args.replicas,
        heartbeats_partitions=args.heartbeat_partitions,
    ) as cluster:
        pids = {
            name: service.process.pid
            for name, service in cluster.services.items()
            if service.process is not None
        }
        pids.update(infra_pids(ROOT / ".local" / "run"))
        urls = tuple(cluster.gateway_url(slot) for slot in range(args.gateways))
        target = Target("project", urls, secret=SECRET)
        for rate, config in step_configs(scenario, args, "project"):
            result = await measured(
                target, config, args.cross_pct, pids, console, f"project {rate:.0f}/s"
            )
            steps.append({"target_updates_per_s": rate, **result})
    return steps


async def run_seed(
    scenario: Scenario, args: argparse.Namespace, console: Console
) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    server = PeerServer(ROOT / ".local" / "logs" / f"seed-{uuid.uuid4().hex[:8]}", workers=2)
    await server.start()
    try:
        target = Target(
            "seed", (server.url,), port=server.port, worker_pids=tuple(server.worker_pids)
        )
        for rate, config in step_configs(scenario, args, "seed"):
            result = await measured(
                target, config, args.cross_pct, server.pids(), console, f"seed {rate:.0f}/s"
            )
            steps.append({"target_updates_per_s": rate, **result})
    finally:
        await server.stop()
    return steps


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    scenario = SCENARIOS[args.workload]
    if args.step_duration is not None:
        args.duration = args.step_duration
    runners = {"project": run_project, "seed": run_seed}
    systems: dict[str, list[dict[str, Any]]] = {}
    for system in args.order:
        systems[system] = await runners[system](scenario, args, console)
    steps = []
    project, seed = systems.get("project", []), systems.get("seed", [])
    for ours, theirs in zip(project, seed, strict=False):
        steps.append(
            {
                "target_updates_per_s": ours["target_updates_per_s"],
                "ratios_project_over_seed": ratios(ours, theirs),
            }
        )
    return {
        "scenario": f"side-by-side-{args.workload}",
        "workload": asdict(scenario),
        "order": list(args.order),
        "systems": systems,
        "ratios": steps,
    }


# -- the table ---------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}x"


def markdown_table(result: Mapping[str, Any]) -> str:
    """Both systems per step, and this project's figures over the seed design's."""
    lines = [
        "| step | system | updates/s | lost | p50 ms | p99 ms | p99.9 ms | server cores "
        "| CPU-s / 1,000 updates | RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    systems = result["systems"]
    names = [name for name in SYSTEMS if name in systems]
    count = max((len(systems[name]) for name in names), default=0)
    for n in range(count):
        for name in names:
            if n >= len(systems[name]):
                continue
            run = systems[name][n]
            lat = run["delivery"]["latency_ms"]
            server = run["server"]
            lines.append(
                f"| {run['target_updates_per_s']:,.0f}/s | {name} | {run['updates_per_s']:,} "
                f"| {run['delivery']['lost']} | {_ms(lat['p50'])} | {_ms(lat['p99'])} "
                f"| {_ms(lat['p99.9'])} | {server['cores']} | {server['cpu_s_per_1000_updates']} "
                f"| {server['rss_mib']:,.0f} |"
            )
        if n < len(result.get("ratios") or ()):
            r = result["ratios"][n]["ratios_project_over_seed"]
            lines.append(
                f"| | **project / seed** | | | {_ratio(r['p50'])} | {_ratio(r['p99'])} "
                f"| {_ratio(r['p99.9'])} | | {_ratio(r['cpu_s_per_1000_updates'])} "
                f"| {_ratio(r['rss'])} |"
            )
    return "\n".join(lines)


def per_process_table(result: Mapping[str, Any]) -> str:
    """Load-phase cores and µs of CPU per update of every server-side process."""
    lines = [
        "| step | system | process | cores | µs CPU / update | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in result["systems"].items():
        for run in runs:
            server = run["server"]
            for process in server["processes"]:
                lines.append(
                    f"| {run['target_updates_per_s']:,.0f}/s | {name} | {process} "
                    f"| {run['resources']['load_phase_cores'].get(process, 0.0)} "
                    f"| {server['cpu_us_per_update'].get(process, 0.0)} "
                    f"| {run['resources']['processes'][process]['rss_mib_peak']:,.0f} |"
                )
    return "\n".join(lines)


def write(result: dict[str, Any], console: Console) -> Path:
    from simulator.plot_side import plot_side_by_side

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result['scenario']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    safe = json_safe(result)
    path.write_text(json.dumps(safe, indent=1) + "\n")
    try:
        console.print(f"plotted {plot_side_by_side(safe, path.with_suffix('.png'))}")
    except ValueError as error:
        console.print(f"no plot for {path}: {error}")
    return path


def add_parser(sub: Any) -> None:
    """``side-by-side`` under ``python -m simulator.bench``."""
    p = sub.add_parser(
        "side-by-side",
        help="this project and the seed design, same schedule, back to back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", dest="workload", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--duration", type=float, default=None, help="s of sending (per step)")
    p.add_argument("--step-duration", type=float, default=None, help="S3: s per step")
    p.add_argument("--students", type=int, default=None, help="override (smoke runs)")
    p.add_argument("--rates", type=float, nargs="+", default=None, help="override, updates/s")
    p.add_argument("--window", type=float, default=None, help="join window, s")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cross-pct", type=int, default=70, help="students on the other node, %%")
    p.add_argument(
        "--order", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="systems, in order"
    )
    p.add_argument("--gateways", type=int, default=2, help="this project: gateways (nodes)")
    p.add_argument(
        "--replicas", type=int, default=1, help="this project: routers, status services, notifiers"
    )
    p.add_argument(
        "--heartbeat-partitions",
        type=int,
        default=1,
        help="this project: heartbeat partitions the notifiers share",
    )


def main(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    result = uvloop.run(run(args, console))
    result["command"] = " ".join(sys.argv)
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    result["machine"] = {"cpus": os.cpu_count(), "uname": " ".join(os.uname())}
    path = write(result, console)
    print(markdown_table(json_safe(result)))
    print()
    print(per_process_table(json_safe(result)))
    console.print(f"wrote {path}")
    return result


def replot(argv: Sequence[str] | None = None) -> int:
    from simulator.plot_side import plot_side_by_side

    parser = argparse.ArgumentParser(prog="python -m simulator.side_by_side")
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args(argv)
    for source in args.results:
        result = json.loads(source.read_text())
        print(plot_side_by_side(result, source.with_suffix(".png")))
        print(markdown_table(result))
        print()
        print(per_process_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(replot())
