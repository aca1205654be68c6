"""Router throughput (and latency), end to end, against the real Kafka.

Creates fresh topics, registers gateways, exam watches and student connections in
presence, and makes realistic log events (status, progress, answers, a few proctor
commands and announcements); runs the router as a subprocess (``python -m
services.router``, like production) and reads every slot's deliveries partition until
every expected delivery item has arrived. Prints one JSON object.

Backlog mode (default): the events are in the log before the router starts, so the
router runs flat out.
- ``events_per_s``: log events routed per second, from the first to the last delivery
  record seen on the deliveries topic;
- ``router_cpu_s`` / ``router_cpu_util`` / ``router_cpu_per_event_us``: CPU time of the
  router process (all its threads) over the same window;
- the router's own counters (records, items, mean batch size) scraped from its /metrics.

Paced mode (``--rate R``): the router is started first; once every watch is confirmed,
events are produced at R per second (acks=all, like a gateway) and each delivery item is
timed from its producer send to being read (``latency_ms``), with the log ack
(``log_ack_ms``) and the router's produce time (``send_to_delivery_produced_ms``, from the
delivery record's timestamp) to show where the time goes.

Usage:
    .venv/bin/python bench/router_throughput.py --events 200000 --partitions 12
    .venv/bin/python bench/router_throughput.py --events 30000 --partitions 12 --rate 2000

Needs the local stack (``infra/stack up``). Its topics (``routerbench-<run>.*``) are
deleted afterwards unless --keep. The box's other load skews both numbers: run it quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from adapters.kafka_topics import ensure_topics
from adapters.settings import KafkaSettings
from schemas.deliveries import DELIVERY_BATCH
from schemas.events import (
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    StudentAnswer,
    StudentProgress,
    StudentStatus,
    encode_event,
    log_key,
)
from schemas.presence import (
    ExamWatch,
    GatewayUp,
    StudentConnection,
    connection_key,
    gateway_key,
    watch_key,
)

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Plan:
    slots: int
    exams: int
    students_per_exam: int
    watchers_per_exam: int
    watches: dict[str, list[int]] = field(default_factory=dict)
    student_slot: dict[str, int] = field(default_factory=dict)
    exam_of: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, slots: int, exams: int, students: int, watchers: int, rng: random.Random
    ) -> Plan:
        plan = cls(slots, exams, students, watchers)
        for e in range(exams):
            exam = f"exam-{e}"
            plan.watches[exam] = sorted(rng.sample(range(slots), watchers))
            for s in range(students):
                attempt = f"att-{e}-{s}"
                plan.student_slot[attempt] = rng.randrange(slots)
                plan.exam_of[attempt] = exam
        return plan


def presence_records(plan: Plan) -> list[tuple[bytes, bytes]]:
    records: list[tuple[bytes, bytes]] = []
    for slot in range(plan.slots):
        up = GatewayUp(slot=slot, instance=f"gw{slot}", started_at=1, heartbeat_interval_s=5)
        records.append((gateway_key(slot), up.model_dump_json().encode()))
    for exam, slots in plan.watches.items():
        for slot in slots:
            w = ExamWatch(slot=slot, instance=f"gw{slot}", exam=exam, request=f"req-{exam}-{slot}")
            records.append((watch_key(slot, exam), w.model_dump_json().encode()))
    for attempt, slot in plan.student_slot.items():
        conn = f"conn-{attempt}"
        c = StudentConnection(
            conn=conn,
            slot=slot,
            instance=f"gw{slot}",
            exam=plan.exam_of[attempt],
            attempt=attempt,
            student=f"stu-{attempt}",
            opened_at=1,
            heartbeat_interval_s=5,
        )
        records.append((connection_key(conn), c.model_dump_json().encode()))
    return records


def make_event(i: int, attempt: str, exam: str, rng: random.Random) -> ExamEvent:
    now = 1_760_000_000_000 + i
    student = f"stu-{attempt}"
    src = EventSource(kind="student", id=student, gateway=0)
    roll = rng.random()
    if roll < 0.005:
        return ProctorAnnouncement(
            id=f"ev{i}",
            exam=exam,
            attempt=None,
            ts=now,
            source=EventSource(kind="proctor", id="p1"),
            text="Ten minutes left",
        )
    if roll < 0.02:
        return ProctorMessage(
            id=f"ev{i}",
            exam=exam,
            attempt=attempt,
            ts=now,
            source=EventSource(kind="proctor", id="p1"),
            text="Please keep the exam tab focused",
        )
    if roll < 0.35:
        return StudentStatus(
            id=f"ev{i}",
            exam=exam,
            attempt=attempt,
            student=student,
            ts=now,
            client_ts=now,
            client_seq=i + 1,
            source=src,
            status="away" if rng.random() < 0.3 else "active",
        )
    if roll < 0.85:
        return StudentProgress(
            id=f"ev{i}",
            exam=exam,
            attempt=attempt,
            student=student,
            ts=now,
            client_ts=now,
            client_seq=i + 1,
            source=src,
            question_current=rng.randrange(40),
            answered=rng.randrange(40),
            total=40,
            time_remaining_s=rng.randrange(3600),
        )
    return StudentAnswer(
        id=f"ev{i}",
        exam=exam,
        attempt=attempt,
        student=student,
        ts=now,
        client_ts=now,
        client_seq=i + 1,
        source=src,
        question=rng.randrange(40),
        answer="B" * rng.randrange(1, 80),
    )


def expected_items(event: ExamEvent, plan: Plan) -> int:
    count = len(plan.watches.get(event.exam, ()))
    if isinstance(event, ProctorMessage) and event.attempt is not None:
        count += 1  # every attempt of the plan has one connection
    elif isinstance(event, ProctorAnnouncement):
        count += len(
            {slot for a, slot in plan.student_slot.items() if plan.exam_of[a] == event.exam}
        )
    return count


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    wanted = {
        "router_events_total",
        "router_records_total",
        "router_record_bytes_total",
        "router_batch_events_count",
        "router_batch_events_sum",
        "router_batch_seconds_sum",
        "router_bad_events_total",
    }
    out: dict[str, float] = {}
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return out
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name in wanted:
            out[name] = float(value)
        elif name.startswith("router_items_total{"):
            out[name] = float(value)
    return out


async def produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, linger_ms=10, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def router_env(
    kafka: KafkaSettings, args: argparse.Namespace, run_id: str, ops_port: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PROCTOR_KAFKA__BOOTSTRAP": kafka.bootstrap,
            "PROCTOR_KAFKA__EVENTS_TOPIC": kafka.events_topic,
            "PROCTOR_KAFKA__PRESENCE_TOPIC": kafka.presence_topic,
            "PROCTOR_KAFKA__HEARTBEATS_TOPIC": kafka.heartbeats_topic,
            "PROCTOR_KAFKA__DELIVERIES_TOPIC": kafka.deliveries_topic,
            "PROCTOR_KAFKA__EVENTS_PARTITIONS": str(args.partitions),
            "PROCTOR_KAFKA__DELIVERIES_PARTITIONS": str(args.slots),
            "PROCTOR_ROUTER__APP_ID": f"routerbench-{run_id}",
            "PROCTOR_ROUTER__OPS_PORT": str(ops_port),
            "PROCTOR_LOG_LEVEL": "WARNING",
        }
    )
    if args.batch_max:
        env["PROCTOR_ROUTER__BATCH_MAX_EVENTS"] = str(args.batch_max)
    if args.within:
        env["PROCTOR_ROUTER__BATCH_WITHIN_S"] = str(args.within)
    return env


def router_command(args: argparse.Namespace) -> list[str]:
    if not args.profile:
        return [sys.executable, "-m", "services.router"]
    renderer = "html" if args.profile.endswith(".html") else "text"
    return [
        sys.executable,
        "-m",
        "pyinstrument",
        "--show-all",
        "-i",
        "0.005",
        "-o",
        args.profile,
        "-r",
        renderer,
        "-m",
        "services.router",
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class DeliveryReader:
    """Counts delivery items on every slot's partition; optionally times them by event id."""

    def __init__(self, kafka: KafkaSettings, slots: int, sent_at: dict[str, float] | None) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 << 20,
            check_crcs=False,
        )
        self._partitions = [TopicPartition(kafka.deliveries_topic, p) for p in range(slots)]
        self._sent_at = sent_at
        self.kinds: Counter[str] = Counter()
        self.received = 0
        self.first = self.last = 0.0
        self.latencies_ms: list[float] = []
        self.to_router_ms: list[float] = []
        self.checked = self.invalid = 0
        self.first_error = ""

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._partitions)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self) -> bool:
        batches = await self._consumer.getmany(timeout_ms=100, max_records=5000)
        now = time.perf_counter()
        wall = time.time()
        for records in batches.values():
            for record in records:
                self._read(record.value, now, wall, record.timestamp / 1000)
        return bool(batches)

    def _read(self, value: bytes, now: float, wall: float, produced: float) -> None:
        if self.checked < 200:
            self.checked += 1
            try:
                DELIVERY_BATCH.validate_json(value)
            except ValidationError as exc:
                self.invalid += 1
                self.first_error = self.first_error or str(exc).splitlines()[1].strip()
        # Counting by bytes keeps the reader cheap: it shares the 2 cores with the router
        # and Kafka. Event values never contain these markers.
        for_proctors = value.count(b'"kind":"for_proctors"')
        for_students = value.count(b'"kind":"for_students"')
        self.kinds["for_proctors"] += for_proctors
        self.kinds["for_students"] += for_students
        self.kinds["watch_ready"] += value.count(b'"kind":"watch_ready"')
        if for_proctors or for_students:
            self.received += for_proctors + for_students
            self.first = self.first or now
            self.last = now
        if self._sent_at is not None and (for_proctors or for_students):
            for item in orjson.loads(value)["items"]:
                sent = self._sent_at.get(item.get("event", {}).get("id", ""))
                if sent is not None:
                    self.latencies_ms.append((wall - sent) * 1000)
                    # the delivery record's timestamp is when the router produced it
                    self.to_router_ms.append((produced - sent) * 1000)


async def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    kafka = KafkaSettings.for_run(
        f"routerbench-{run_id}",
        bootstrap=args.bootstrap,
        events_partitions=args.partitions,
        deliveries_partitions=args.slots,
    )
    await ensure_topics(kafka)
    plan = Plan.build(args.slots, args.exams, args.students_per_exam, args.watchers, rng)
    await produce(kafka, kafka.presence_topic, presence_records(plan))
    watches = sum(len(slots) for slots in plan.watches.values())

    attempts = list(plan.student_slot)
    log_records: list[tuple[bytes, bytes]] = []
    ids: list[str] = []
    expected = 0
    for i in range(args.events):
        attempt = rng.choice(attempts)
        event = make_event(i, attempt, plan.exam_of[attempt], rng)
        expected += expected_items(event, plan)
        log_records.append((log_key(event), encode_event(event)))
        ids.append(event.id)
    mean_event_bytes = sum(len(v) for _, v in log_records) / len(log_records)

    paced = args.rate > 0
    sent_at: dict[str, float] | None = {} if paced else None
    produce_s = 0.0
    if not paced:
        t_produce = time.perf_counter()
        await produce(kafka, kafka.events_topic, log_records)
        produce_s = time.perf_counter() - t_produce

    reader = DeliveryReader(kafka, args.slots, sent_at)
    await reader.start()
    ops_port = free_port()
    started = time.perf_counter()
    env = router_env(kafka, args, run_id, ops_port)
    router = subprocess.Popen(router_command(args), cwd=REPO, env=env)
    cpu_at_first = cpu_at_last = 0.0
    pacer: asyncio.Task[None] | None = None
    spy: subprocess.Popen[bytes] | None = None
    acked_ms: list[float] = []
    try:
        deadline = time.monotonic() + args.timeout

        def check() -> None:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {reader.received}/{expected} items")
            if router.poll() is not None:
                raise SystemExit(f"router exited with {router.returncode}")

        if args.spy:
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--format",
                    "raw",
                    "--threads",
                    "--rate",
                    "200",
                    "--output",
                    args.spy,
                    "--pid",
                    str(router.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        if paced:
            # Ready = every watch confirmed; then events flow at the chosen rate.
            while reader.kinds["watch_ready"] < watches:
                check()
                await reader.poll()
            assert sent_at is not None
            pacer = asyncio.create_task(pace(kafka, log_records, ids, args.rate, sent_at, acked_ms))
        while reader.received < expected:
            check()
            if await reader.poll() and not cpu_at_first:
                cpu_at_first = cpu_seconds(router.pid)
        cpu_at_last = cpu_seconds(router.pid)
        metrics = scrape(ops_port)
    finally:
        if pacer is not None:
            pacer.cancel()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=30)
        router.terminate()
        try:
            router.wait(timeout=60)
        except subprocess.TimeoutExpired:
            router.kill()
        await reader.stop()
        if not args.keep:
            await delete_topics(kafka)

    window = reader.last - reader.first
    cpu = cpu_at_last - cpu_at_first
    batches_count = metrics.get("router_batch_events_count", 0.0)
    result: dict[str, object] = {
        "mode": f"paced at {args.rate}/s" if paced else "backlog",
        "events": args.events,
        "log_partitions": args.partitions,
        "slots": args.slots,
        "exams": args.exams,
        "students": len(attempts),
        "watchers_per_exam": args.watchers,
        "batch_within_s": args.within or "default",
        "mean_event_bytes": round(mean_event_bytes, 1),
        "expected_items": expected,
        "received_items": reader.received,
        "items_by_kind": dict(reader.kinds),
        "schema_checked_records": reader.checked,
        "schema_invalid_records": reader.invalid,
        "schema_first_error": reader.first_error,
        "backlog_produce_s": round(produce_s, 2),
        "router_start_to_first_delivery_s": round(reader.first - started, 2),
        "window_s": round(window, 3),
        "events_per_s": round(args.events / window) if window > 0 else None,
        "items_per_s": round(reader.received / window) if window > 0 else None,
        "router_cpu_s": round(cpu, 2),
        "router_cpu_util": round(cpu / window, 2) if window > 0 else None,
        "router_cpu_per_event_us": round(cpu / args.events * 1e6, 1),
        "router_mean_batch_events": round(metrics["router_batch_events_sum"] / batches_count, 1)
        if batches_count
        else None,
        "router_metrics": metrics,
    }
    if reader.latencies_ms:
        lat = reader.latencies_ms
        result["latency_ms"] = {
            "what": "producer send (acks=all) -> delivery record read from the slot partition",
            "p50": round(percentile(lat, 0.50), 2),
            "p99": round(percentile(lat, 0.99), 2),
            "p999": round(percentile(lat, 0.999), 2),
            "max": round(max(lat), 2),
        }
        result["log_ack_ms"] = {
            "what": "producer send -> acks=all acknowledgement of the log record",
            "p50": round(percentile(acked_ms, 0.50), 2),
            "p99": round(percentile(acked_ms, 0.99), 2),
            "max": round(max(acked_ms), 2),
        }
        to_router = reader.to_router_ms
        result["send_to_delivery_produced_ms"] = {
            "what": "producer send -> router's send of the delivery record (record timestamp, ms)",
            "p50": round(percentile(to_router, 0.50), 2),
            "p99": round(percentile(to_router, 0.99), 2),
            "max": round(max(to_router), 2),
        }
    return result


async def pace(
    kafka: KafkaSettings,
    records: list[tuple[bytes, bytes]],
    ids: list[str],
    rate: float,
    sent_at: dict[str, float],
    acked_ms: list[float],
) -> None:
    """Produce the events at a steady rate, as gateways would (acks=all, no linger)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await producer.start()
    try:
        begin = time.perf_counter()
        futures = []
        for index, (key, value) in enumerate(records):
            due = begin + index / rate
            delay = due - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
            sent = sent_at[ids[index]] = time.time()
            future = await producer.send(kafka.events_topic, value, key=key)
            future.add_done_callback(
                lambda _, sent=sent: acked_ms.append((time.time() - sent) * 1000)
            )
            futures.append(future)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def delete_topics(kafka: KafkaSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(
            [
                kafka.events_topic,
                kafka.presence_topic,
                kafka.heartbeats_topic,
                kafka.deliveries_topic,
            ]
        )
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12, help="log partitions")
    parser.add_argument("--slots", type=int, default=8, help="gateway slots (delivery partitions)")
    parser.add_argument("--exams", type=int, default=20)
    parser.add_argument("--students-per-exam", type=int, default=500)
    parser.add_argument("--watchers", type=int, default=2, help="slots watching each exam")
    parser.add_argument("--batch-max", type=int, default=0, help="override router batch size")
    parser.add_argument("--within", type=float, default=0.0, help="override router batch wait")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("PROCTOR_KAFKA__BOOTSTRAP", "127.0.0.1:19092")
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="paced mode: produce at this many events/s while the router runs (latency)",
    )
    parser.add_argument(
        "--spy", default="", help="sample the router with py-spy (if installed) into this file"
    )
    parser.add_argument("--profile", default="", help="write a pyinstrument HTML profile here")
    parser.add_argument("--keep", action="store_true", help="keep the bench topics")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
