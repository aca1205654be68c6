"""Load generation over several processes: students in workers, proctors in the parent.

Each worker process runs its own uvloop event loop with its share of ``StudentBot`` s over
real WebSockets: join (spread over a window), one status/progress update per student per
interval with jitter (sometimes away/active or an answer, see ``StudentBot.step``), a
heartbeat after each interval without any other frame, a submit at the end. Workers share
one schedule in wall-clock time (one machine, one clock) and hand back what they sent; the
parent's proctors record every row they receive; ``simulator.accounting`` matches the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import multiprocessing.sharedctypes
import os
import random
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import uvloop

from adapters.gc_tuning import GcPolicy, tune_gc
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from simulator.accounting import ConnectResult, Receipt, per_second
from simulator.clients import ProctorBot, StudentBot, client_session, wall_ms

# Per-worker shared counters: pid, connected, failed, sent.
_FIELDS = 4
_counters: Any = None


@dataclass(frozen=True)
class LoadConfig:
    students: int
    proctors: int = 1
    students_per_exam: int = 50
    rate_per_student: float = 0.2  # updates per student per second (one per 5 s)
    duration_s: float = 60.0
    join_window_s: float = 5.0
    workers: int = 2
    settle_s: float = 3.0
    drain_s: float = 5.0
    submit: bool = True
    join_only: bool = False
    connect_timeout_s: float = 30.0
    seed: int = 1
    tag: str = ""  # distinct attempts and exams per run on the same system

    @property
    def exams(self) -> int:
        return max(1, -(-self.students // self.students_per_exam))


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    secret: str
    gateway_urls: tuple[str, ...]
    students: tuple[tuple[int, float], ...]  # (student number, join offset in the window)
    config: LoadConfig
    join_at: float  # wall-clock seconds
    drive_at: float
    drive_end: float


@dataclass
class WorkerResult:
    sent: dict[str, dict[int, int]]
    connects: list[ConnectResult]
    unacked: int
    errors: int


def attempt_of(n: int, config: LoadConfig) -> str:
    return f"{config.tag}a{n:06d}"


def exam_of(n: int, config: LoadConfig) -> str:
    return f"{config.tag}exam-{n // config.students_per_exam:04d}"


def proctor_exams(config: LoadConfig) -> list[list[str]]:
    """Every exam gets a proctor; with more proctors than exams, exams get several."""
    watched: list[set[int]] = [set() for _ in range(config.proctors)]
    for exam in range(config.exams):
        watched[exam % config.proctors].add(exam)
    for proctor in range(config.proctors):
        watched[proctor].add(proctor % config.exams)
    return [[f"{config.tag}exam-{e:04d}" for e in sorted(exams)] for exams in watched]


def _init_worker(counters: Any) -> None:
    global _counters
    _counters = counters
    # Linux: the worker gets SIGTERM if the parent dies, so no orphans keep connections open.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def run_worker(plan: WorkerPlan) -> WorkerResult:
    base = plan.index * _FIELDS
    _counters[base] = os.getpid()
    # The instrument must not pause either: 5,000 clients per worker make a big heap.
    tune_gc(GcPolicy())
    return uvloop.run(_worker(plan, base))


async def _sleep_until(at: float) -> None:
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _worker(plan: WorkerPlan, base: int) -> WorkerResult:
    config = plan.config
    codec = TokenCodec(plan.secret)
    connects: list[ConnectResult] = []
    bots: list[StudentBot] = []

    async def join(n: int, offset: float) -> None:
        attempt = attempt_of(n, config)
        identity = StudentIdentity(
            role="student", sub=f"s{n:06d}", exam=exam_of(n, config), attempt=attempt
        )
        url = plan.gateway_urls[n % len(plan.gateway_urls)]
        bot = StudentBot(url, codec.issue(identity), attempt)
        await _sleep_until(plan.join_at + offset)
        started = time.perf_counter()
        try:
            await bot.connect(http, timeout_s=config.connect_timeout_s)
        except Exception as error:  # a failed join is a result, not a crash
            connects.append(
                ConnectResult(False, (time.perf_counter() - started) * 1e3, type(error).__name__)
            )
            _counters[base + 2] += 1
            with contextlib.suppress(Exception):
                await bot.close()
            return
        connects.append(ConnectResult(True, (time.perf_counter() - started) * 1e3))
        _counters[base + 1] += 1
        bots.append(bot)

    async def drive(bot: StudentBot, rng: random.Random) -> None:
        interval = 1.0 / config.rate_per_student
        at = plan.drive_at + rng.uniform(0, interval)
        while at < plan.drive_end:
            await _sleep_until(at)
            before = bot.seq
            await bot.step(rng)
            _counters[base + 3] += bot.seq - before
            at += interval * rng.uniform(0.8, 1.2)
        if config.submit:
            await bot.send("submit", score=float(bot.answered))
            _counters[base + 3] += 1

    async with client_session() as http:
        await asyncio.gather(*(join(n, offset) for n, offset in plan.students))
        if not config.join_only:
            rng = random.Random(config.seed * 1_000_003 + plan.index)
            await asyncio.gather(*(drive(bot, random.Random(rng.random())) for bot in bots))
        else:
            await _sleep_until(plan.drive_end)
        await asyncio.sleep(config.drain_s)
        result = WorkerResult(
            sent={bot.attempt: bot.sent_at for bot in bots},
            connects=connects,
            unacked=sum(len(bot.unacked) for bot in bots),
            errors=sum(len(bot.errors) for bot in bots),
        )
        await asyncio.gather(*(bot.close() for bot in bots), return_exceptions=True)
    return result


@dataclass
class RecordingProctor(ProctorBot):
    """Keeps every live row as it arrived, before the dashboard drops stale or repeated ones."""

    raw: list[Receipt] = field(default_factory=list)

    # Receipts carry the receive time and the gateway's updated_at (ms) in one unit.
    units_per_ms: ClassVar[int] = 1

    def _now(self) -> int:
        return wall_ms()

    def _apply(self, row: dict[str, Any], *, live: bool) -> None:
        if live:
            self.raw.append(
                Receipt(
                    row["attempt"],
                    row["seq"],
                    row.get("client_seq", 0),
                    self._now(),
                    (row.get("updated_at") or 0) * self.units_per_ms,
                )
            )
        super()._apply(row, live=live)


@dataclass
class LoadOutcome:
    config: LoadConfig
    sent: dict[str, dict[int, int]]
    receipts: dict[str, list[Receipt]]
    watching: dict[str, list[str]]
    connects: list[ConnectResult]
    unacked: int
    student_errors: int
    drive_at_ms: int
    drive_end_ms: int
    worker_pids: list[int]

    def throughput(self) -> dict[str, list[int]]:
        sends = (ms for seqs in self.sent.values() for ms in seqs.values())
        rows = (r.at_ms for got in self.receipts.values() for r in got)
        return {
            "sent_per_s": per_second(sends, self.drive_at_ms),
            "received_rows_per_s": per_second(rows, self.drive_at_ms),
        }


@dataclass
class Progress:
    """What the live display shows; ``counters`` is shared with the workers."""

    counters: Any
    workers: int
    proctors: list[RecordingProctor] = field(default_factory=list)
    phase: str = "starting"

    def totals(self) -> dict[str, int]:
        values = list(self.counters)
        return {
            "connected": sum(values[i * _FIELDS + 1] for i in range(self.workers)),
            "failed": sum(values[i * _FIELDS + 2] for i in range(self.workers)),
            "sent": sum(values[i * _FIELDS + 3] for i in range(self.workers)),
            "received": sum(len(p.raw) for p in self.proctors),
        }

    def pids(self) -> list[int]:
        values = list(self.counters)
        return [values[i * _FIELDS] for i in range(self.workers) if values[i * _FIELDS]]


async def run_load(
    config: LoadConfig,
    gateway_urls: tuple[str, ...],
    secret: str,
    on_progress: Callable[[Progress], None] | None = None,
) -> LoadOutcome:
    """Proctors connect and watch first; then the workers join, drive, submit and drain."""
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", config.workers * _FIELDS, lock=False)
    progress = Progress(counters, config.workers)
    codec = TokenCodec(secret)
    watching: dict[str, list[str]] = {}
    exams_of = proctor_exams(config)
    async with client_session() as http:
        progress.phase = "proctors"
        for n, exams in enumerate(exams_of):
            token = codec.issue(ProctorIdentity(role="proctor", sub=f"p{n}", exams=tuple(exams)))
            proctor = RecordingProctor(gateway_urls[(n + 1) % len(gateway_urls)], token)
            await proctor.connect(http, timeout_s=config.connect_timeout_s)
            for exam in exams:
                await proctor.watch(exam, timeout_s=config.connect_timeout_s)
            progress.proctors.append(proctor)
            watching[str(n)] = [
                attempt_of(s, config) for s in range(config.students) if exam_of(s, config) in exams
            ]

        spread = random.Random(config.seed)
        join_at = time.time() + 3.0  # spawned workers import aiohttp & co. first
        drive_at = join_at + config.join_window_s + config.settle_s
        drive_end = drive_at + config.duration_s
        shares: list[list[tuple[int, float]]] = [[] for _ in range(config.workers)]
        for n in range(config.students):
            offset = config.join_window_s * (n + spread.random()) / config.students
            shares[n % config.workers].append((n, offset))
        plans = [
            WorkerPlan(i, secret, gateway_urls, tuple(share), config, join_at, drive_at, drive_end)
            for i, share in enumerate(shares)
        ]
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(
            config.workers, mp_context=context, initializer=_init_worker, initargs=(counters,)
        ) as pool:
            futures = [loop.run_in_executor(pool, run_worker, plan) for plan in plans]
            progress.phase = "running"
            waiting = asyncio.ensure_future(asyncio.gather(*futures))
            try:
                while not waiting.done():
                    now = time.time()
                    progress.phase = (
                        "spawning"
                        if now < join_at
                        else "joining"
                        if now < drive_at
                        else "driving"
                        if now < drive_end
                        else "draining"
                    )
                    if on_progress is not None:
                        on_progress(progress)
                    await asyncio.wait([waiting], timeout=1.0)
                results: list[WorkerResult] = waiting.result()
            finally:
                if not waiting.done():
                    waiting.cancel()
        worker_pids = progress.pids()
        for proctor in progress.proctors:
            await proctor.close()
    sent: dict[str, dict[int, int]] = {}
    for result in results:
        sent.update(result.sent)
    return LoadOutcome(
        config=config,
        sent=sent,
        receipts={str(n): p.raw for n, p in enumerate(progress.proctors)},
        watching=watching,
        connects=[c for r in results for c in r.connects],
        unacked=sum(r.unacked for r in results),
        student_errors=sum(r.errors for r in results),
        drive_at_ms=int(drive_at * 1000),
        drive_end_ms=int(drive_end * 1000),
        worker_pids=worker_pids,
    )
