"""``python -m simulator.demo``: the whole system with a simulated exam to watch.

Starts two gateways, the router, the status service and the notifier as separate
processes on the real infrastructure, then runs an exam: tens of students spread over both
gateways (status, progress, answers, away spells, a lost network, a closed tab, submits)
and two proctors, one per gateway. Prints the proctor's live dashboard in the terminal and
a token and URL so you can connect your own client, a link to the browser dashboard (signed in
with the proctor's token) and a link to the demo exam page as one more student. Ctrl-C stops
everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

from adapters.kafka_topics import ensure_topics
from adapters.settings import CommonSettings
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from deploy import monitoring
from services.gateway.settings import GatewayOptions
from simulator.clients import ProctorBot, StudentBot, client_session, wall_ms
from simulator.launcher import Cluster

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between updates")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until Ctrl-C")
    parser.add_argument("--port", type=int, default=8080, help="first gateway port (+1 second)")
    parser.add_argument("--monitoring", action="store_true", help="start infra/monitoring too")
    return parser.parse_args()


def dashboard(exam: str, proctor: ProctorBot, urls: list[str]) -> Table:
    rows = sorted(proctor.rows.values(), key=lambda r: (r["status"] != "offline", r["attempt"]))
    counts = Counter("submitted" if r["submitted"] else r["status"] for r in rows)
    title = (
        f"exam {exam}: {counts['active']} active, {counts['away']} away, "
        f"{counts['offline']} offline, {counts['submitted']} submitted  |  "
        f"gateways {' '.join(urls)}"
    )
    table = Table(title=title, expand=True)
    for column in ("student", "status", "question", "answered", "time left", "away", "note"):
        table.add_column(column)
    colour = {"active": "green", "away": "yellow", "offline": "red"}
    now = wall_ms()
    for r in rows[:30]:
        state = "submitted" if r["submitted"] else r["status"]
        left = "" if r.get("time_end") is None else f"{max(0, r['time_end'] - now) // 1000}s"
        note = r.get("offline_reason") or ("paused" if r["paused"] else "")
        if r["submitted"]:
            note = f"score {r.get('score')}"
        table.add_row(
            r.get("name") or r["student"],
            f"[{colour.get(state, 'blue')}]{state}[/]",
            str(r.get("question_current") or ""),
            f"{r['answered']}/{r['total']}",
            left,
            str(r["away_count"]),
            note,
        )
    return table


async def run_student(
    bot: StudentBot, http: aiohttp.ClientSession, interval: float, rng: random.Random
) -> None:
    await bot.connect(http)
    await bot.send("progress", question_current=1, answered=0, total=20, time_remaining_s=1800)
    while bot.answered < bot.total_questions:
        await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
        if not bot.paused:
            await bot.step(rng)
        fate = rng.random()
        if fate < 0.004:
            await bot.drop()  # network gone: the notifier must notice by heartbeat timeout
            await asyncio.sleep(interval * 6)
            bot.send_heartbeats = True
            await bot.connect(http)
        elif fate < 0.008:
            await bot.close()  # tab closed; comes back a little later
            await asyncio.sleep(interval * 4)
            await bot.connect(http)
    await bot.send("submit", score=round(rng.uniform(40, 100), 1))


async def main_async(args: argparse.Namespace) -> None:
    console = Console()
    base = CommonSettings()
    options = GatewayOptions()
    codec = TokenCodec(options.token_secret, issuer=options.token_issuer)
    await ensure_topics(base.kafka)
    cluster = Cluster(
        env={},
        log_dir=ROOT / ".local" / "logs" / "demo",
        gateway_ports={0: args.port, 1: args.port + 1},
    )
    console.print("starting gateways 0 and 1, router, status, notifier ...")
    await cluster.start()
    exam = f"demo-{time.strftime('%H%M%S')}"
    urls = [cluster.gateway_url(0), cluster.gateway_url(1)]
    proctor_token = codec.issue(
        ProctorIdentity(role="proctor", sub="proctor-ada", exams=(exam,), name="Ada")
    )
    console.print(f"[bold]exam[/] {exam} with {args.students} students")
    console.print(f"[bold]proctor token[/] {proctor_token}")
    console.print(
        f"[bold]watch it yourself[/]: connect to {urls[1]}?token=<proctor token> and send"
    )
    console.print(f'  {{"type":"subscribe","exam":"{exam}"}}')
    you = codec.issue(
        StudentIdentity(
            role="student",
            sub="you",
            exam=exam,
            attempt=f"{exam}-you",
            name="You (browser)",
            time_end=wall_ms() + 1_800_000,
        )
    )
    console.print(
        f"[bold]dashboard[/]: http://127.0.0.1:{args.port + 1}/?token={proctor_token}&exam={exam}"
    )
    console.print(f"[bold]exam page as a student[/]: http://127.0.0.1:{args.port}/exam?token={you}")
    console.print(f"logs: {cluster.log_dir}; metrics: http://127.0.0.1:{args.port}/metrics")
    ops_ports = {name: service.ops_port for name, service in cluster.services.items()}
    graph = await asyncio.to_thread(monitoring.attach, ops_ports, "demo", start=args.monitoring)
    console.print(
        f"[bold]prometheus[/]: {graph}" if graph else "prometheus: off (--monitoring)",
        soft_wrap=True,
    )
    rng = random.Random(7)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with client_session() as http:
        proctors = [ProctorBot(urls[1], proctor_token), ProctorBot(urls[0], proctor_token)]
        for proctor in proctors:
            await proctor.connect(http)
            await proctor.watch(exam)
        bots = []
        for n in range(args.students):
            token = codec.issue(
                StudentIdentity(
                    role="student",
                    sub=f"s{n:03d}",
                    exam=exam,
                    attempt=f"{exam}-a{n:03d}",
                    name=f"Student {n:03d}",
                    time_end=wall_ms() + 1_800_000,
                )
            )
            bots.append(StudentBot(urls[n % 2], token, f"{exam}-a{n:03d}"))
        tasks = [
            asyncio.create_task(run_student(b, http, args.interval, random.Random(i)))
            for i, b in enumerate(bots)
        ]
        started = time.monotonic()
        with Live(
            dashboard(exam, proctors[0], urls), console=console, refresh_per_second=2
        ) as live:
            while not stop.is_set():
                live.update(dashboard(exam, proctors[0], urls))
                if args.duration and time.monotonic() - started > args.duration:
                    break
                if rng.random() < 0.02:
                    await proctors[0].command("announce", exam, text="Thirty minutes remain.")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bot in bots:
            with contextlib.suppress(Exception):
                await bot.close()
        for proctor in proctors:
            await proctor.close()
    console.print("stopping services ...")
    monitoring.remove_targets("demo")
    await cluster.stop_all()


def main() -> None:
    asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    main()
