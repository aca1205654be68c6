"""One fault run: a fresh system on the fault instance, students and proctors under load, one
fault injected and ended, then every property checked against the log.

The harness reports, it does not abort: a violated property becomes a figure and an entry in
``violations``; only a harness error (the system would not start) ends a run early, and even
then the row is written with the error. The pytest wrapper (``test_faults.py``) asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from adapters.dynamo_store import DynamoStatusStore
from adapters.kafka_topics import delete_topics, ensure_topics, topic_specs
from adapters.settings import DynamoSettings, KafkaSettings, RedisSettings
from adapters.snapshot_store import RedisSnapshotStore
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from schemas.views import StudentView
from simulator.clients import client_session
from simulator.launcher import Cluster, Service, _die_with_parent
from simulator.system import isolated_env
from tests.faults import cluster as kafka_cluster
from tests.faults.clients import FaultProctor, FaultStudent
from tests.faults.infra import FaultInfra, InfraService
from tests.faults.logcheck import LogReader, LogTruth, differences, row_view, summarise

SECRET = "faults-secret-0123456789abcdef0123456789abcdef"


# -- what a run looks like ----------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Size and pacing of one fault run."""

    students: int = 200
    exams: int = 4
    quiet_every: int = 5  # every n-th student goes quiet after the warm-up (only heartbeats)
    update_interval_s: float = 2.5  # mean gap between a busy student's updates
    command_interval_s: float = 5.0  # mean gap between one proctor's commands
    join_window_s: float = 4.0
    warmup_s: float = 15.0
    after_s: float = 20.0  # load kept up after the fault has ended
    service_down_s: float = 5.0  # a killed service stays down this long before its restart
    drain_bound_s: float = 60.0  # every sent event acknowledged within this, after the load
    converge_bound_s: float = 60.0  # every view equal to the log within this, after the drain
    heartbeat_interval_s: float = 5.0
    events_partitions: int = 6
    log_level: str = "INFO"


LONG = Profile()
CI = Profile(
    students=40,
    warmup_s=5.0,
    after_s=6.0,
    join_window_s=1.0,
    service_down_s=3.0,
    update_interval_s=2.0,
    command_interval_s=3.0,
    drain_bound_s=30.0,
    converge_bound_s=30.0,
)


@dataclass(frozen=True)
class Fault:
    name: str
    label: str
    # kill-service | kill-each | kafka-stall | kafka-kill | dynamodb-stall | redis-flushall
    # | broker-kill
    kind: str
    target: str = ""
    duration_s: float = 0.0
    # The system it runs on: gateways, instances of router, status and notifier each, and
    # heartbeat partitions (how many notifiers can share the liveness work).
    gateways: int = 2
    replicas: int = 1
    heartbeats_partitions: int = 1
    # kill-each: SIGKILLed one after the other, duration_s apart, never restarted.
    targets: tuple[str, ...] = ()
    # Kafka brokers of the instance it runs on: 3 is the fault cluster
    # (FaultInfra.cluster_from_env), whose topics get replication 3 and min.insync.replicas 2.
    brokers: int = 1
    # A property of its own: no gap between two acknowledgements (any client's) longer than this.
    max_ack_gap_s: float | None = None


# broker-kill: how long the broker stays down, and the bound on its return to every ISR.
BROKER_DOWN_S = 10.0
ISR_BOUND_S = 60.0


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("gateway-kill", "gateway-0 SIGKILL, restarted", "kill-service", "gateway-0"),
        Fault("router-kill", "router SIGKILL, restarted", "kill-service", "router"),
        Fault("status-kill", "status SIGKILL, restarted", "kill-service", "status"),
        Fault("notifier-kill", "notifier SIGKILL, restarted", "kill-service", "notifier"),
        Fault("kafka-stall-6", "Kafka SIGSTOP 6 s", "kafka-stall", "kafka", 6.0),
        Fault("kafka-stall-30", "Kafka SIGSTOP 30 s", "kafka-stall", "kafka", 30.0),
        Fault("kafka-stall-90", "Kafka SIGSTOP 90 s", "kafka-stall", "kafka", 90.0),
        Fault("kafka-kill", "Kafka SIGKILL, restarted", "kafka-kill", "kafka"),
        Fault(
            "dynamodb-stall-60", "DynamoDB Local SIGSTOP 60 s", "dynamodb-stall", "dynamodb", 60.0
        ),
        Fault("redis-flushall", "Redis FLUSHALL", "redis-flushall", "redis"),
        Fault(
            "scaled-out-kills",
            "3 gateways, 2 routers, 2 status, 2 notifiers: one of each SIGKILLed in turn, 12 s"
            " apart, not restarted",
            "kill-each",
            duration_s=12.0,
            gateways=3,
            replicas=2,
            heartbeats_partitions=4,
            targets=("gateway-2", "router", "status", "notifier"),
        ),
        # One broker of three SIGKILLed mid-exam, the load kept up, restarted 10 s later. The
        # active controller is the harder case: a quorum election comes before its fencing, and
        # as a broker it leads about a third of the partitions (measured: no ack for 5.2 s,
        # against 3.0 s for broker-kill-leader, the broker leading most of the run's
        # partitions and not the controller). Bound: the 3 s broker session, an election of
        # 2-3 s, and room for a loaded 2-core box.
        Fault(
            "broker-kill",
            "Kafka broker SIGKILL (1 of 3, the active controller), restarted after 10 s",
            "broker-kill",
            "controller",
            BROKER_DOWN_S,
            brokers=3,
            max_ack_gap_s=8.0,
        ),
        Fault(
            "broker-kill-leader",
            "Kafka broker SIGKILL (1 of 3, most partition leaders, not the controller),"
            " restarted after 10 s",
            "broker-kill",
            "leader",
            BROKER_DOWN_S,
            brokers=3,
            max_ack_gap_s=8.0,
        ),
    )
}
LONG_SUITE = tuple(FAULTS)
CI_SUITE = (
    "gateway-kill",
    "kafka-stall-6",
    "notifier-kill",
    "redis-flushall",
    "scaled-out-kills",
    "broker-kill",  # last: the three-broker instance is started for it alone
)


@dataclass
class Timeline:
    """Monotonic times of the run's phases."""

    started: float = 0.0
    fault_start: float = 0.0
    fault_end: float = 0.0
    quiesced: float = 0.0
    drained: float | None = None


@dataclass
class Views:
    """When each view first matched the log, seconds after the drain (None: never)."""

    converged_s: dict[str, float | None] = field(default_factory=dict)
    caught_up_s: dict[str, float | None] = field(default_factory=dict)
    last_wrong: dict[str, str] = field(default_factory=dict)


# -- the system under test ----------------------------------------------------------------


@dataclass
class SourceCluster(Cluster):
    """``Cluster`` whose services run from another checkout (``source``), e.g. a git worktree
    of an older commit: its directory is the working directory and first on ``PYTHONPATH``."""

    source: Path | None = None

    async def _spawn(self, service: Service) -> None:
        if self.source is None:
            await super()._spawn(service)
            return
        env = {**os.environ, **service.env}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.source), env.get("PYTHONPATH", "")) if p
        )
        log = service.log_path.open("ab")
        try:
            service.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                service.module,
                env=env,
                cwd=self.source,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()


class FaultRun:
    def __init__(
        self,
        fault: Fault,
        profile: Profile,
        infra: FaultInfra,
        *,
        log_root: Path,
        source: Path | None = None,
        seed: int = 7,
        say: Callable[[str], None] = print,
    ) -> None:
        self.fault = fault
        self.profile = profile
        self.infra = infra
        self.source = source
        self.say = say
        self.rng = random.Random(seed)
        if infra.brokers != fault.brokers:
            raise ValueError(f"{fault.name} runs on {fault.brokers} broker(s), not {infra.brokers}")
        self.run_id = f"flt-{fault.name}-{uuid.uuid4().hex[:6]}"
        self.kafka = KafkaSettings.for_run(
            self.run_id,
            bootstrap=infra.kafka_bootstrap,
            events_partitions=profile.events_partitions,
            deliveries_partitions=4,
            heartbeats_partitions=fault.heartbeats_partitions,
            replication_factor=infra.replication_factor,
        )
        self.redis = RedisSettings(url=infra.redis_url, key_prefix=f"{self.run_id}:")
        self.dynamo = DynamoSettings(
            endpoint=infra.dynamodb_endpoint, table=f"{self.run_id}-first-attempts"
        )
        self.log_dir = log_root / self.run_id
        self.cluster: SourceCluster | None = None
        self.students: list[FaultStudent] = []
        self.proctors: list[FaultProctor] = []
        self.times = Timeline()
        self.views = Views()
        self.notes: list[str] = []
        self.driving = False
        self.fresh_wrong: dict[str, str] = {}
        self.fresh_checked = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._monitor: asyncio.Task[None] | None = None
        self.killed: set[str] = set()  # kill-each's victims: their exit is the fault's
        self.leavers: list[str] = []  # attempts whose students closed their tab for good
        self.replication: dict[str, Any] = {}  # broker-kill: the cluster's figures

    # -- set-up ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            **isolated_env(self.run_id, self.kafka, secret=SECRET),
            **self.infra.service_env(),
            "PROCTOR_REDIS__KEY_PREFIX": f"{self.run_id}:",
            "PROCTOR_DYNAMO__TABLE": self.dynamo.table,
            "PROCTOR_GATEWAY__HEARTBEAT_INTERVAL_S": str(self.profile.heartbeat_interval_s),
            "PROCTOR_LOG_LEVEL": self.profile.log_level,
        }

    def _cluster(self) -> SourceCluster:
        return SourceCluster(
            env=self._env(),
            log_dir=self.log_dir,
            ready_timeout_s=90.0,
            source=self.source,
            gateway_slots=tuple(range(self.fault.gateways)),
            replicas=self.fault.replicas,
        )

    def _clients(self) -> None:
        codec = TokenCodec(SECRET)
        assert self.cluster is not None
        urls = tuple(self.cluster.gateway_url(slot) for slot in range(self.fault.gateways))
        p = self.profile
        for n in range(p.students):
            exam = f"ex{n % p.exams}"
            attempt, student = f"att{n:04d}", f"stu{n:04d}"
            token = codec.issue(
                StudentIdentity(
                    role="student", sub=student, exam=exam, attempt=attempt, name=f"Student {n}"
                )
            )
            self.students.append(
                FaultStudent(
                    name=attempt,
                    urls=urls,
                    first_url=n % len(urls),
                    token=token,
                    rng=random.Random(self.rng.random()),
                    exam=exam,
                    attempt=attempt,
                )
            )
        # Exams 0 and 1 are watched from both gateways; exam 2 only from gateway 0, exam 3
        # only from gateway 1, so a fresh subscription elsewhere reads the Redis snapshot.
        layout = [(0, ("ex0", "ex1")), (1, ("ex0", "ex1")), (0, ("ex2",)), (1, ("ex3",))]
        for i, (slot, exams) in enumerate(layout):
            exams = tuple(e for e in exams if int(e[2:]) < p.exams)
            token = codec.issue(ProctorIdentity(role="proctor", sub=f"proc{i}", exams=exams))
            self.proctors.append(
                FaultProctor(
                    name=f"proc{i}",
                    urls=urls,
                    first_url=slot,
                    token=token,
                    rng=random.Random(self.rng.random()),
                    exams=exams,
                )
            )

    # -- load -----------------------------------------------------------------------------

    async def _drive_student(self, student: FaultStudent, quiet: bool) -> None:
        interval = self.profile.update_interval_s
        await asyncio.sleep(student.rng.uniform(0, interval))
        while self.driving:
            if not (quiet and time.monotonic() > self.times.started + self.profile.warmup_s / 2):
                await student.step()
            await asyncio.sleep(interval * student.rng.uniform(0.5, 1.5))

    async def _drive_proctor(self, proctor: FaultProctor) -> None:
        interval = self.profile.command_interval_s
        await asyncio.sleep(proctor.rng.uniform(0, interval))
        while self.driving:
            attempts = sorted(proctor.rows)
            if attempts and proctor.connected:
                attempt = proctor.rng.choice(attempts)
                exam = proctor.rows[attempt]["exam"]
                if proctor.rng.random() < 0.7:
                    await proctor.command("message", exam, attempt=attempt, text="Eyes on the exam")
                else:
                    await proctor.command("extend", exam, attempt=attempt, seconds=60)
            await asyncio.sleep(interval * proctor.rng.uniform(0.5, 1.5))

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        result: dict[str, Any] = {"fault": self.fault.name, "label": self.fault.label}
        error: str | None = None
        self.cluster = self._cluster()
        try:
            async with client_session() as http:
                try:
                    await self.infra.up_async()  # a no-op unless an earlier fault left it down
                    await ensure_topics(self.kafka)
                    if self.infra.brokers > 1:
                        await self._check_replication()
                    await self.cluster.start()
                    self._clients()
                    await self._connect(http)
                    await self._load_with_fault()
                    result |= await self._check()
                except Exception as exc:  # a harness failure is reported in the row too
                    error = f"{type(exc).__name__}: {exc}"
                    self.say(f"  harness error: {error}")
                finally:
                    self.infra.resume_all()
                    self.driving = False
                    await self._stop_monitor()
                    await self._stop_clients()
        finally:
            await self._teardown()
        result["error"] = error
        result["run_id"] = self.run_id
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["notes"] = "; ".join(self.notes)
        result["violations"] = violations(result)
        return result

    async def _connect(self, http: Any) -> None:
        p = self.profile
        self.times.started = time.monotonic()
        for client in self.proctors:
            self._tasks.append(asyncio.create_task(client.run(http)))
        for i, student in enumerate(self.students):
            self._tasks.append(asyncio.create_task(self._join(student, http, i)))
        everyone: list[FaultStudent | FaultProctor] = [*self.students, *self.proctors]
        deadline = time.monotonic() + p.join_window_s + 60
        while time.monotonic() < deadline:
            ready = all(c.connected for c in everyone) and all(
                len(pr.subscribed) == len(pr.exams) for pr in self.proctors
            )
            if ready:
                break
            await asyncio.sleep(0.1)
        else:
            missing = sum(not c.connected for c in everyone)
            bound = p.join_window_s + 60
            raise RuntimeError(f"{missing} clients not connected within {bound:.0f}s")
        self.say(f"  {len(self.students)} students, {len(self.proctors)} proctors connected")

    async def _join(self, student: FaultStudent, http: Any, index: int) -> None:
        await asyncio.sleep(self.profile.join_window_s * index / max(1, len(self.students)))
        await student.run(http)

    async def _load_with_fault(self) -> None:
        p = self.profile
        self.driving = True
        for n, student in enumerate(self.students):
            quiet = p.quiet_every > 0 and n % p.quiet_every == p.quiet_every - 1
            student.quiet = quiet
            self._tasks.append(asyncio.create_task(self._drive_student(student, quiet)))
        for proctor in self.proctors:
            self._tasks.append(asyncio.create_task(self._drive_proctor(proctor)))
        await asyncio.sleep(p.warmup_s)
        self.say(f"  fault: {self.fault.label}")
        self.times.fault_start = time.monotonic()
        await self._inject()
        self.times.fault_end = time.monotonic()
        self.say(
            f"  fault over after {self.times.fault_end - self.times.fault_start:.1f}s;"
            f" load for {p.after_s:.0f}s more"
        )
        self._monitor = asyncio.create_task(self._watch_catch_up())
        await asyncio.sleep(p.after_s)
        self.driving = False
        self.times.quiesced = time.monotonic()
        await self._drain()

    async def _inject(self) -> None:
        fault, cluster, infra = self.fault, self.cluster, self.infra
        assert cluster is not None
        match fault.kind:
            case "kill-service":
                await cluster.kill(fault.target)
                await asyncio.sleep(self.profile.service_down_s)
                await cluster.start(fault.target)
            case "kill-each":
                # Quiet students (nothing left unacknowledged) who close their tab for good,
                # two just before a notifier dies and two just after: each must get exactly
                # one offline verdict, from whichever notifier owns the attempt by then.
                quiet = [st for st in self.students if st.quiet]
                for n, target in enumerate(fault.targets):
                    if n:
                        await asyncio.sleep(fault.duration_s)
                    if target.startswith("notifier"):
                        await self._leave(quiet[:2])
                    self.say(f"  SIGKILL {target}")
                    self.killed.add(target)
                    await cluster.kill(target)
                    if target.startswith("notifier"):
                        await self._leave(quiet[2:4])
                # The last one's share is taken over too before the fault counts as over.
                await asyncio.sleep(fault.duration_s)
            case "kafka-stall" | "dynamodb-stall":
                service: InfraService = "kafka" if fault.kind == "kafka-stall" else "dynamodb"
                pid = infra.signal(service, signal.SIGSTOP)
                try:
                    await asyncio.sleep(fault.duration_s)
                finally:
                    os.kill(pid, signal.SIGCONT)
            case "kafka-kill":
                pid = infra.signal("kafka", signal.SIGKILL)
                await infra.wait_gone(pid)
                await infra.wait_ports_closed("kafka")
                restarted = time.monotonic()
                await infra.up_async()
                self.notes.append(f"Kafka back in {time.monotonic() - restarted:.1f}s")
            case "broker-kill":
                await self._kill_broker()
            case "redis-flushall":
                client = aioredis.Redis.from_url(infra.redis_url)
                try:
                    await client.flushall()
                finally:
                    await client.aclose()
            case _:
                raise ValueError(f"unknown fault kind {fault.kind}")

    def _topics(self) -> list[str]:
        return [spec.name for spec in topic_specs(self.kafka)]

    async def _check_replication(self) -> None:
        """The run's topics as a cluster should have them: every partition on 3 brokers, all
        in sync, min.insync.replicas 2 (what ensure_topics gives replication 3)."""
        bootstrap, topics = self.infra.kafka_bootstrap, self._topics()
        wrong: list[str] = []
        for _ in range(50):  # a new topic's metadata reaches every broker within moments
            try:
                states = await kafka_cluster.partitions(bootstrap, topics)
                break
            except RuntimeError:
                await asyncio.sleep(0.1)
        else:
            states = await kafka_cluster.partitions(bootstrap, topics)
        for state in states:
            if len(state.replicas) != self.infra.replication_factor:
                wrong.append(f"{state.topic}/{state.partition}: replicas {state.replicas}")
            elif set(state.isr) != set(state.replicas):
                wrong.append(f"{state.topic}/{state.partition}: isr {state.isr}")
        for topic in topics:
            config = await kafka_cluster.topic_config(bootstrap, topic)
            if config.get("min.insync.replicas") != "2":
                wrong.append(f"{topic}: min.insync.replicas {config.get('min.insync.replicas')}")
        self.replication["topic_settings_wrong"] = wrong
        self.replication["partitions"] = len(states)

    async def _kill_broker(self) -> None:
        """SIGKILL one broker of the cluster (the active controller, or the broker leading most
        of the run's partitions), keep the load up, restart it after ``duration_s`` and wait
        until every partition of the run's topics has all three replicas in sync again."""
        fault, infra, figures = self.fault, self.infra, self.replication
        bootstrap, topics = infra.kafka_bootstrap, self._topics()
        quorum = await kafka_cluster.describe_quorum(bootstrap)
        led = kafka_cluster.leaders(await kafka_cluster.partitions(bootstrap, topics))
        if fault.target == "controller":
            victim = quorum.leader
        else:
            others = {b: n for b, n in led.items() if b != quorum.leader}
            victim = max(sorted(others), key=lambda b: others[b])
        node: InfraService = f"kafka-{victim}"  # type: ignore[assignment]
        figures |= {
            "broker_killed": victim,
            "controller": quorum.leader,
            "broker_led": led[victim],
            "leaders_before": {str(b): n for b, n in sorted(led.items())},
        }
        role = "the active controller" if victim == quorum.leader else "not the controller"
        self.notes.append(
            f"SIGKILL broker {victim} ({role}; it led {led[victim]} of the run's"
            f" {sum(led.values())} partitions)"
        )
        self.say(f"  SIGKILL {node} ({role}, leader of {led[victim]} partitions)")
        killed = time.monotonic()
        pid = infra.signal(node, signal.SIGKILL)
        moved = asyncio.create_task(self._leaders_moved(bootstrap, topics, victim, killed))
        await infra.wait_gone(pid)
        await infra.wait_ports_closed(node)
        await asyncio.sleep(max(0.0, killed + fault.duration_s - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await moved
        if not moved.done():
            moved.cancel()
        # The ISRs are watched from the restart on, while `up` waits for the node to be ready.
        restarted = time.monotonic()
        isr_watch = asyncio.create_task(
            kafka_cluster.wait_isr_full(bootstrap, topics, ISR_BOUND_S + 30)
        )
        offsets_watch = asyncio.create_task(
            kafka_cluster.wait_isr_full(bootstrap, [kafka_cluster.OFFSETS_TOPIC], ISR_BOUND_S + 30)
        )
        await infra.up_async()
        back = time.monotonic() - restarted
        isr_s, short = await isr_watch
        offsets_s, _ = await offsets_watch
        if isr_s is not None and isr_s > ISR_BOUND_S:
            isr_s = None
        quorum_after = await kafka_cluster.describe_quorum(bootstrap)
        figures |= {
            "broker_back_s": _round(back),
            "isr_full_s": _round(isr_s),
            "isr_full_offsets_s": _round(offsets_s),
            "isr_short": [f"{s.topic}/{s.partition} isr {s.isr}" for s in short[:5]],
            "controller_after": quorum_after.leader,
        }
        isr = "never" if isr_s is None else f"{isr_s:.1f}s"
        self.notes.append(
            f"broker {victim} restarted {fault.duration_s:.0f}s after the kill, back in"
            f" {back:.1f}s, in every ISR of the run's topics {isr} after its restart"
        )

    async def _leaders_moved(
        self, bootstrap: str, topics: list[str], victim: int, killed: float
    ) -> None:
        """Seconds from the kill until no partition of the run's topics names the killed broker
        as leader or in its ISR: the cluster fenced it and every partition has a leader."""
        while True:
            with contextlib.suppress(Exception):
                states = await kafka_cluster.partitions(bootstrap, topics)
                if all(s.leader not in (victim, -1) and victim not in s.isr for s in states):
                    self.replication["fenced_s"] = _round(time.monotonic() - killed)
                    return
            await asyncio.sleep(0.1)

    async def _leave(self, students: list[FaultStudent]) -> None:
        for student in students:
            self.leavers.append(student.attempt)
            await student.stop()

    async def _drain(self) -> None:
        """Wait until every client has every event acknowledged (bounded)."""
        deadline = self.times.quiesced + self.profile.drain_bound_s
        clients: list[FaultStudent | FaultProctor] = [*self.students, *self.proctors]
        while time.monotonic() < deadline:
            if not any(c.unacked for c in clients):
                self.times.drained = time.monotonic()
                return
            await asyncio.sleep(0.1)

    # -- checks ---------------------------------------------------------------------------

    async def _check(self) -> dict[str, Any]:
        reader = LogReader(
            self.infra.kafka_bootstrap, self.kafka.events_topic, self.kafka.events_partitions
        )
        await reader.start()
        try:
            await reader.catch_up()
            await self._converge(reader)
            await self._stop_monitor()
            await self._fresh_snapshots(reader.truth)
            await reader.catch_up()
            return self._figures(reader.truth)
        finally:
            await reader.close()

    async def _converge(self, reader: LogReader) -> None:
        """Poll every view until it equals the log's fold, or the bound passes."""
        base = self.times.drained or time.monotonic()
        deadline = base + self.profile.converge_bound_s
        converged: dict[str, float | None] = dict.fromkeys(VIEWS)
        async with ViewReader(self) as views:
            while True:
                await reader.catch_up()
                truth = reader.truth.views()
                for name in VIEWS:
                    try:
                        wrong = differences(views.expected(name, truth), await views.read(name))
                    except Exception as exc:  # a view that cannot be read is not converged
                        wrong = {"*": f"unreadable: {type(exc).__name__}"}
                    if wrong:
                        converged[name] = None
                        self.views.last_wrong[name] = summarise(wrong)
                    elif converged[name] is None:
                        converged[name] = time.monotonic() - base
                        self.views.last_wrong.pop(name, None)
                if all(v is not None for v in converged.values()) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
        self.views.converged_s = converged

    async def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor

    async def _watch_catch_up(self) -> None:
        """From the fault's end: how long until each view holds, for every attempt, at least
        the state the log had when the fault ended (its seq or a later one)."""
        reader = LogReader(
            self.infra.kafka_bootstrap, self.kafka.events_topic, self.kafka.events_partitions
        )
        caught: dict[str, float | None] = dict.fromkeys(VIEWS)
        self.views.caught_up_s = caught
        try:
            await reader.start()
            await reader.catch_up()
            target = reader.truth.views()
            async with ViewReader(self) as views:
                while any(v is None for v in caught.values()):
                    for name in VIEWS:
                        if caught[name] is not None:
                            continue
                        with contextlib.suppress(Exception):
                            late = behind(views.expected(name, target), await views.read(name))
                            if not late:
                                caught[name] = time.monotonic() - self.times.fault_end
                    await asyncio.sleep(0.5)
        finally:
            await reader.close()

    def _exams(self) -> list[str]:
        return [f"ex{e}" for e in range(self.profile.exams)]

    async def _fresh_snapshots(self, truth: LogTruth) -> None:
        """A new proctor on a gateway with no live view of an exam: its snapshot comes from
        Redis. It must equal the log (the gateway waits for the watermarks first)."""
        assert self.cluster is not None
        codec = TokenCodec(SECRET)
        urls = (self.cluster.gateway_url(0), self.cluster.gateway_url(1))
        async with client_session() as http:
            for exam in self._exams():
                watched = {
                    p._url_index % 2 for p in self.proctors if exam in p.subscribed and p.connected
                }
                free = [slot for slot in (0, 1) if slot not in watched]
                if not free:
                    continue
                token = codec.issue(ProctorIdentity(role="proctor", sub="fresh", exams=(exam,)))
                fresh = FaultProctor(
                    name="fresh",
                    urls=urls,
                    first_url=free[0],
                    token=token,
                    rng=random.Random(1),
                    exams=(exam,),
                )
                task = asyncio.create_task(fresh.run(http))
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(20):
                            while exam not in fresh.subscribed:
                                await asyncio.sleep(0.05)
                    if exam not in fresh.subscribed:
                        self.fresh_wrong[f"{exam}/*"] = "missing: no snapshot"
                    else:
                        seen = {a: row_view(r) for a, r in fresh.rows.items()}
                        self.fresh_wrong |= differences(truth.views(exam), seen)
                    self.fresh_checked += 1
                finally:
                    await fresh.stop()
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def _figures(self, truth: LogTruth) -> dict[str, Any]:
        t = self.times
        clients: list[FaultStudent | FaultProctor] = [*self.students, *self.proctors]
        acked = {i: s for c in clients for i, s in c.events.items() if s.acked_at is not None}
        lost = sorted(set(acked) - set(truth.ids))
        sends = {i: s.sends for c in clients for i, s in c.events.items()}
        dups = truth.duplicates()
        resent = {i: n for i, n in dups.items() if sends.get(i, 0) > 1}
        other = {i: n for i, n in dups.items() if i not in resent}
        dup_sources: Counter[str] = Counter(truth.sources.get(i, "?") for i in other)
        open_attempts = {s.attempt for s in self.students if s.open_throughout}
        false_offline = {v.attempt for v in truth.offline if v.attempt in open_attempts}
        false_reasons = Counter(v.reason for v in truth.offline if v.attempt in open_attempts)
        all_reasons = Counter(v.reason for v in truth.offline)
        ack_times = sorted(s.acked_at for s in acked.values() if s.acked_at is not None)
        after = [a for a in ack_times if a >= t.fault_end]
        before_end = [s for c in clients for s in c.events.values() if s.first_sent < t.fault_end]
        backlog: float | None = None
        if before_end and all(s.acked_at is not None for s in before_end):
            last = max(s.acked_at for s in before_end if s.acked_at is not None)
            backlog = max(0.0, last - t.fault_end)
        window = [a for a in ack_times if t.fault_start <= a]
        gaps = [b - a for a, b in zip([t.fault_start, *window], window, strict=False)]
        errors: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        for client in clients:
            errors.update(client.errors)
            refused.update(client.refused)
        drops = sum(len(s.drops) for s in self.students)
        comebacks = [r for s in self.students for r in s.reconnect_times()]
        back = [r for r in comebacks if r is not None]
        exited = self._exited()
        unacked = sum(len(c.unacked) for c in clients)
        waits = [s.acked_at - s.first_sent for s in acked.values() if s.acked_at is not None]
        converged = self.views.converged_s
        figures: dict[str, Any] = {
            "students": len(self.students),
            "proctors": len(self.proctors),
            "fault_s": round(t.fault_end - t.fault_start, 1),
            "sent": sum(len(c.events) for c in clients),
            "acked": len(acked),
            "acked_lost": len(lost),
            "acked_lost_sample": lost[:5],
            "unacked_at_end": unacked,
            "log_records": truth.records,
            "dups": sum(n - 1 for n in dups.values()),
            "dups_resent": sum(n - 1 for n in resent.values()),
            "dups_unexplained": sum(n - 1 for n in other.values()),
            "dups_unexplained_by_source": dict(dup_sources),
            "false_offline": len(false_offline),
            "offline_repeats": truth.offline_repeats,
            "leavers": len(self.leavers),
            "leavers_without_verdict": sum(
                1 for a in self.leavers if not any(v.attempt == a for v in truth.offline)
            ),
            "false_offline_reasons": dict(false_reasons),
            "open_throughout": len(open_attempts),
            "offline_verdicts": dict(all_reasons),
            "first_ack_after_fault_s": _round(after[0] - t.fault_end if after else None),
            "backlog_acked_s": _round(backlog),
            "longest_ack_gap_s": _round(max(gaps) if gaps else None),
            "max_ack_gap_bound_s": self.fault.max_ack_gap_s,
            # From an event's first send to its acknowledgement, resends included: the longest
            # any one student waited.
            "slowest_ack_s": _round(max(waits) if waits else None),
            "drained_s": _round(None if t.drained is None else t.drained - t.quiesced),
            "caught_up_s": {k: _round(v) for k, v in self.views.caught_up_s.items()},
            "caught_up_all_s": _round(_all(self.views.caught_up_s)),
            "converged_s": {k: _round(v) for k, v in converged.items()},
            "converged_all_s": _round(_all(converged)),
            "not_converged": dict(self.views.last_wrong),
            "fresh_snapshot_exams": self.fresh_checked,
            "fresh_snapshot_wrong": summarise(self.fresh_wrong) if self.fresh_wrong else "",
            "student_drops": drops,
            "reconnect_max_s": _round(max(back) if back else None),
            "never_reconnected": comebacks.count(None),
            "services_exited": exited,
            "errors": dict(errors),
            "refused_events": dict(refused),
            "proctor_resubscribes": sum(max(0, p.snapshots - len(p.exams)) for p in self.proctors),
            **self.replication,
        }
        self.notes.extend(_notes(figures))
        return figures

    def _exited(self) -> dict[str, int]:
        """Services that died on their own (not the one the fault killed and restarted)."""
        assert self.cluster is not None
        return {
            name: service.process.returncode
            for name, service in self.cluster.services.items()
            if service.process is not None
            and service.process.returncode is not None
            and name not in self.killed
        }

    # -- tear-down ------------------------------------------------------------------------

    async def _stop_clients(self) -> None:
        for client in [*self.students, *self.proctors]:
            client.stopped = True
        await asyncio.gather(
            *(c.stop() for c in [*self.students, *self.proctors]), return_exceptions=True
        )
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _teardown(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await self.cluster.stop_all()
        with contextlib.suppress(Exception):
            await delete_topics(self.kafka)
        store = DynamoStatusStore(self.dynamo, workers=1)
        with contextlib.suppress(Exception):
            await store.open(create_table=False)
            await store.delete_table()
        with contextlib.suppress(Exception):
            await store.close()
        client = aioredis.Redis.from_url(self.infra.redis_url)
        try:
            with contextlib.suppress(Exception):
                keys = [k async for k in client.scan_iter(match=f"{self.run_id}:*", count=1000)]
                if keys:
                    await client.delete(*keys)
        finally:
            await client.aclose()


VIEWS = ("proctors", "redis", "dynamodb")


class ViewReader:
    """Reads each view of a run as {key: StudentView}; proctors' keys are ``proctor/attempt``."""

    def __init__(self, run: FaultRun) -> None:
        self._run = run
        self._store = DynamoStatusStore(run.dynamo, workers=2)
        self._client = aioredis.Redis.from_url(run.infra.redis_url)
        self._snapshots = RedisSnapshotStore(self._client, run.redis, topic=run.kafka.events_topic)

    async def __aenter__(self) -> ViewReader:
        await self._store.open(create_table=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._store.close()
        await self._client.aclose()

    async def read(self, name: str) -> dict[str, StudentView]:
        if name == "proctors":
            return self._proctors()
        seen: dict[str, StudentView] = {}
        for exam in self._run._exams():
            if name == "redis":
                states, _ = await self._snapshots.read_exam(exam)
                seen |= {s.view.attempt: s.view for s in states}
            else:
                seen |= {v.attempt: v for v in await self._store.scan_exam(exam)}
        return seen

    def _proctors(self) -> dict[str, StudentView]:
        seen: dict[str, StudentView] = {}
        for proctor in self._run.proctors:
            for attempt, row in proctor.rows.items():
                if row["exam"] in proctor.subscribed:
                    seen[f"{proctor.name}/{attempt}"] = row_view(row)
        return seen

    def expected(self, name: str, truth: dict[str, StudentView]) -> dict[str, StudentView]:
        if name != "proctors":
            return truth
        return {
            f"{proctor.name}/{attempt}": view
            for proctor in self._run.proctors
            for attempt, view in truth.items()
            if view.exam in proctor.exams
        }


def behind(target: dict[str, StudentView], seen: dict[str, StudentView]) -> list[str]:
    """Keys whose view is missing or holds an older state (lower seq) than ``target``."""
    return [key for key, view in target.items() if key not in seen or seen[key].seq < view.seq]


def _all(times: dict[str, float | None]) -> float | None:
    """The last of the views to get there, or None if one never did."""
    if not times or any(v is None for v in times.values()):
        return None
    return max(v for v in times.values() if v is not None)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _notes(f: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    if f["offline_verdicts"]:
        verdicts = ", ".join(f"{n} {r}" for r, n in sorted(f["offline_verdicts"].items()))
        notes.append(f"offline verdicts: {verdicts}")
    if f["student_drops"]:
        back = "never all" if f["never_reconnected"] else f"all within {f['reconnect_max_s']}s"
        notes.append(f"{f['student_drops']} student sockets dropped, back {back}")
    for name, code in sorted(f["services_exited"].items()):
        notes.append(f"{name} exited ({code})")
    caught = f["caught_up_s"]
    if caught:
        notes.append(
            "caught up after the fault: "
            + ", ".join(f"{k} {'never' if v is None else f'{v}s'}" for k, v in caught.items())
        )
    if f["first_ack_after_fault_s"] is not None:
        notes.append(f"first ack {f['first_ack_after_fault_s']}s after the fault")
    if f["longest_ack_gap_s"] is not None and f["longest_ack_gap_s"] >= 2:
        notes.append(f"no ack for {f['longest_ack_gap_s']}s")
    if f.get("slowest_ack_s") is not None and f["slowest_ack_s"] >= 2:
        notes.append(f"slowest ack {f['slowest_ack_s']}s after the first send")
    if f.get("fenced_s") is not None:
        notes.append(f"killed broker fenced, its partitions led elsewhere {f['fenced_s']}s after")
    if f["backlog_acked_s"] is None:
        notes.append("events sent before the fault ended never all acked")
    else:
        notes.append(f"backlog acked {f['backlog_acked_s']}s after the fault")
    if f["unacked_at_end"]:
        notes.append(f"{f['unacked_at_end']} events never acked")
    for name, what in sorted(f["not_converged"].items()):
        notes.append(f"{name} not converged: {what}")
    if f["fresh_snapshot_wrong"]:
        notes.append(f"fresh snapshot: {f['fresh_snapshot_wrong']}")
    if f["dups_resent"]:
        notes.append(f"{f['dups_resent']} dups from client resends")
    if f["dups_unexplained"]:
        sources = ", ".join(f"{n} {s}" for s, n in sorted(f["dups_unexplained_by_source"].items()))
        notes.append(f"duplicate ids written by: {sources}")
    errors = {k: v for k, v in f["errors"].items() if k != "rate_limited" or v}
    if errors:
        notes.append("errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(errors.items())))
    return notes


def violations(result: dict[str, Any]) -> list[str]:
    """The properties of issue 9 that this run broke (empty: all held)."""
    if result.get("error"):
        return [f"harness error: {result['error']}"]
    found: list[str] = []
    if result["acked_lost"]:
        found.append(f"{result['acked_lost']} acknowledged events missing from the log")
    if result["dups_unexplained"]:
        found.append(f"{result['dups_unexplained']} duplicate ids not from a client resend")
    if result.get("leavers_without_verdict"):
        found.append(f"{result['leavers_without_verdict']} students who left never went offline")
    if result.get("offline_repeats"):
        found.append(f"{result['offline_repeats']} offline verdicts for a student already offline")
    if result["false_offline"]:
        found.append(f"{result['false_offline']} students offline with their socket open")
    for name, code in sorted(result["services_exited"].items()):
        found.append(f"{name} exited on its own ({code})")
    if result["never_reconnected"]:
        found.append(f"{result['never_reconnected']} dropped students never reconnected")
    if result["unacked_at_end"]:
        found.append(f"{result['unacked_at_end']} events never acknowledged")
    for name, what in sorted(result["not_converged"].items()):
        found.append(f"{name} not equal to the log: {what}")
    if result["fresh_snapshot_wrong"]:
        found.append(f"fresh snapshot not equal to the log: {result['fresh_snapshot_wrong']}")
    bound, gap = result.get("max_ack_gap_bound_s"), result.get("longest_ack_gap_s")
    if bound is not None and (gap is None or gap > bound):
        found.append(f"no acknowledgement for {gap}s (bound {bound}s)")
    if result.get("topic_settings_wrong"):
        found.append("topics not replicated as asked: " + "; ".join(result["topic_settings_wrong"]))
    if "broker_killed" in result and result.get("isr_full_s") is None:
        short = ", ".join(result.get("isr_short", []))
        found.append(f"the restarted broker not in every ISR within {ISR_BOUND_S:.0f}s: {short}")
    return found
