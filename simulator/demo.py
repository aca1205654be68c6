"""``python -m simulator.demo``: the whole system with a simulated exam to watch.

Starts two gateways, the router, the status service and the notifier as separate
processes on the real infrastructure, then runs an exam: tens of students spread over both
gateways (status, progress, answers, away spells, a lost network, a closed tab, submits)
and two proctors, one per gateway. Prints the proctor's live dashboard in the terminal,
a proctor and a student token so you can connect your own client, a link to the browser
dashboard (signed in with the proctor's token) and a link to the demo exam page as one more
student, each whole on one line however narrow the terminal. Each run has its own topics,
consumer groups, Redis keys and DynamoDB table (``--run-id``) and takes free ports when its
own are busy, so two demos run side by side. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import random
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from adapters.cli import plain_text
from adapters.kafka_topics import delete_topics, ensure_topics
from adapters.settings import CommonSettings, KafkaSettings
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from deploy import monitoring
from services.gateway.settings import GatewayOptions
from simulator.clients import ProctorBot, StudentBot, client_session, wall_ms
from simulator.launcher import Cluster, free_port
from simulator.system import isolated_env

if TYPE_CHECKING:
    from tests.lti.platform import Platform

ROOT = Path(__file__).resolve().parent.parent
CLAIMS = ROOT / ".local" / "run" / "demo"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=plain_text(__doc__ or ""), epilog=SIDE_BY_SIDE
    )
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between updates")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until Ctrl-C")
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="first gateway's port, the second's is the next (default 8080); 0, or a port"
        " in use: any free ports",
    )
    parser.add_argument(
        "--run-id",
        help="names this demo's exam, topics, consumer groups, Redis keys and DynamoDB table"
        " (default: demo-<time>-<random>, new each run)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's topics at the end (to audit it)"
    )
    parser.add_argument("--monitoring", action="store_true", help="start infra/monitoring too")
    parser.add_argument(
        "--lti",
        action="store_true",
        help=(
            "also start the LTI 1.3 tool and a stand-in LMS (the tests' lti1p3platform platform)"
            " with a course to launch from as a learner or an instructor"
        ),
    )
    return parser.parse_args(argv)


SIDE_BY_SIDE = (
    "Each run has its own topics, groups, keys and table, and takes free ports when 8080 is"
    " busy, so two demos run side by side."
)


def gateway_ports(first: int, claims: ExitStack | None = None) -> tuple[int, int]:
    """The two gateways' ports: ``first`` and the next if both are free, else any free ones.

    With ``claims``, ``first`` is also claimed for as long as it stays open: a demo starting
    alongside, which would see the ports free until this demo's gateways bind them, takes
    others instead of racing them for the same ports.
    """
    if first and _claim(first, claims) and _free(first) and _free(first + 1):
        return first, first + 1
    return free_port(), free_port()


def _claim(port: int, claims: ExitStack | None) -> bool:
    if claims is None:
        return True
    CLAIMS.mkdir(parents=True, exist_ok=True)
    lock = claims.enter_context((CLAIMS / f"port-{port}.lock").open("w"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _free(port: int) -> bool:
    with socket.socket() as sock:
        # As the gateway binds: a previous run's connections in TIME_WAIT do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def new_run_id() -> str:
    return f"demo-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True)
class Links:
    """What the demo hands its watcher: tokens, and links that carry them."""

    run_id: str
    exam: str
    proctor_gateway: str
    http_ports: tuple[int, int]  # the student's gateway, the proctor's
    proctor_token: str
    student_token: str
    log_dir: Path

    def lines(self) -> list[tuple[str, str]]:
        student_port, proctor_port = self.http_ports
        return [
            ("proctor token", self.proctor_token),
            ("student token", self.student_token),
            (
                "dashboard",
                f"http://127.0.0.1:{proctor_port}/?token={self.proctor_token}&exam={self.exam}",
            ),
            (
                "exam page as a student",
                f"http://127.0.0.1:{student_port}/exam?token={self.student_token}",
            ),
            ("watch it yourself", f"connect to {self.proctor_gateway}?token=<proctor token>"),
            ("", f'and send {{"type":"subscribe","exam":"{self.exam}"}}'),
            ("logs", str(self.log_dir)),
            ("metrics", f"http://127.0.0.1:{student_port}/metrics"),
            (
                "audit it (with --keep)",
                f"PROCTOR_KAFKA__EVENTS_TOPIC={self.run_id}.events"
                f" proctor-audit export --exam {self.exam} --format html --out {self.exam}.html",
            ),
        ]


def print_links(console: Console, links: Links | list[tuple[str, str]]) -> None:
    # Whole lines, never wrapped at the terminal's width: a token or link copied from two
    # lines comes back with a line break in it, and the gateway answers unauthorized.
    for label, value in links.lines() if isinstance(links, Links) else links:
        text = Text.assemble((f"{label}: ", "bold"), value) if label else Text("  " + value)
        console.print(text, soft_wrap=True, highlight=False)


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
    options = GatewayOptions()
    codec = TokenCodec(options.token_secret, issuer=options.token_issuer)
    run_id = args.run_id or new_run_id()
    kafka = KafkaSettings.for_run(
        run_id, bootstrap=CommonSettings().kafka.bootstrap, deliveries_partitions=2
    )
    await ensure_topics(kafka)
    claims = ExitStack()  # held until the process ends
    ports = gateway_ports(args.port, claims)
    if args.port and ports[0] != args.port:
        console.print(f"port {args.port} or {args.port + 1} is taken: using {ports[0]}, {ports[1]}")
    cluster = Cluster(
        env=isolated_env(run_id, kafka, secret=options.token_secret),
        log_dir=ROOT / ".local" / "logs" / "demo" / run_id,
        gateway_ports={0: ports[0], 1: ports[1]},
    )
    lms = add_lti(cluster, ports[1]) if args.lti else None
    console.print(f"run {run_id}: starting gateways 0 and 1, router, status, notifier ...")
    if lms is not None:
        await lms.start()
    await cluster.start()
    exam = run_id
    urls = [cluster.gateway_url(0), cluster.gateway_url(1)]
    proctor_token = codec.issue(
        ProctorIdentity(role="proctor", sub="proctor-ada", exams=(exam,), name="Ada")
    )
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
    console.print(f"[bold]exam[/] {exam} with {args.students} students")
    print_links(console, Links(run_id, exam, urls[1], ports, proctor_token, you, cluster.log_dir))
    if lms is not None:
        print_links(console, lms_links(lms))
    ops_ports = {name: service.ops_port for name, service in cluster.services.items()}
    graph = await asyncio.to_thread(monitoring.attach, ops_ports, run_id, start=args.monitoring)
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
    monitoring.remove_targets(run_id)
    await cluster.stop_all()
    if lms is not None:
        await lms.stop()
    if not args.keep:
        await delete_topics(kafka)


def add_lti(cluster: Cluster, app_port: int) -> Platform:
    """The LTI tool as one more service, registered with a stand-in LMS on ``localhost`` (a
    site of its own, as a real LMS is): the platform the LTI tests run against, imported
    only here since it needs the test extras (the demo runs from a checkout)."""
    from tests.lti.platform import Platform, demo_course, tool_endpoints

    port = free_port()
    tool_url = f"http://127.0.0.1:{port}"
    lms = Platform(tool_endpoints(tool_url))
    demo_course(lms)
    registration = {
        "issuer": lms.issuer,
        "client_id": lms.client_id,
        "auth_login_url": lms.auth_url,
        "auth_token_url": lms.token_url,
        "key_set_url": lms.jwks_url,
        "deployment_ids": [lms.deployment_id],
    }
    cluster.add(
        "lti",
        "services.lti",
        port,
        {
            "PROCTOR_LTI__PORT": str(port),
            "PROCTOR_LTI__PUBLIC_URL": tool_url,
            "PROCTOR_LTI__APP_URL": f"http://127.0.0.1:{app_port}",
            "PROCTOR_LTI__PLATFORMS": json.dumps([registration]),
        },
    )
    return lms


def lms_links(lms: Platform) -> list[tuple[str, str]]:
    from tests.lti.platform import DEMO_COURSE

    return [
        ("LMS course as a learner", lms.course_url(DEMO_COURSE, "alice")),
        ("LMS course as another learner", lms.course_url(DEMO_COURSE, "bob")),
        ("LMS course as the instructor", lms.course_url(DEMO_COURSE, "carol")),
        ("LTI tool configuration", f"{lms.tool.launch_url.rsplit('/', 1)[0]}/config"),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
