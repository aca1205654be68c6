"""Router throughput, end to end, against the real Kafka.

Creates fresh topics, registers gateways, exam watches and student connections in
presence, produces a backlog of realistic log events (status, progress, answers, a few
proctor commands and announcements), then starts the router (``python -m services.router``
as a subprocess, like production) and reads the deliveries topic until every expected
delivery item has arrived. Prints one JSON object:

- ``events_per_s``: log events routed per second, from the first to the last delivery
  record seen on the deliveries topic;
- ``router_cpu_s`` / ``router_cpu_per_event_us``: CPU time of the router process (all its
  threads) over the same window;
- the router's own counters (records, items, mean batch size) scraped from its /metrics.

Usage:
    .venv/bin/python bench/router_throughput.py --events 200000 --partitions 12

Needs the local stack (``infra/stack up``). Topics are deleted afterwards unless --keep.
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
    def build(cls, slots: int, exams: int, students: int, watchers: int, rng: random.Random) -> Plan:
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
            id=f"ev{i}", exam=exam, attempt=None, ts=now,
            source=EventSource(kind="proctor", id="p1"), text="Ten minutes left",
        )
    if roll < 0.02:
        return ProctorMessage(
            id=f"ev{i}", exam=exam, attempt=attempt, ts=now,
            source=EventSource(kind="proctor", id="p1"), text="Please keep the exam tab focused",
        )
    if roll < 0.35:
        return StudentStatus(
            id=f"ev{i}", exam=exam, attempt=attempt, student=student, ts=now, client_ts=now,
            client_seq=i + 1, source=src, status="away" if rng.random() < 0.3 else "active",
        )
    if roll < 0.85:
        return StudentProgress(
            id=f"ev{i}", exam=exam, attempt=attempt, student=student, ts=now, client_ts=now,
            client_seq=i + 1, source=src, question_current=rng.randrange(40),
            answered=rng.randrange(40), total=40, time_remaining_s=rng.randrange(3600),
        )
    return StudentAnswer(
        id=f"ev{i}", exam=exam, attempt=attempt, student=student, ts=now, client_ts=now,
        client_seq=i + 1, source=src, question=rng.randrange(40), answer="B" * rng.randrange(1, 80),
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
        "router_events_total", "router_records_total", "router_record_bytes_total",
        "router_batch_events_count", "router_batch_events_sum", "router_batch_seconds_sum",
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


async def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap=args.bootstrap,
        events_topic=f"bench-{run_id}.events",
        presence_topic=f"bench-{run_id}.presence",
        heartbeats_topic=f"bench-{run_id}.heartbeats",
        deliveries_topic=f"bench-{run_id}.deliveries",
        events_partitions=args.partitions,
        deliveries_partitions=args.slots,
    )
    await ensure_topics(kafka)
    plan = Plan.build(args.slots, args.exams, args.students_per_exam, args.watchers, rng)
    await produce(kafka, kafka.presence_topic, presence_records(plan))

    attempts = list(plan.student_slot)
    log_records: list[tuple[bytes, bytes]] = []
    expected = 0
    for i in range(args.events):
        attempt = rng.choice(attempts)
        event = make_event(i, attempt, plan.exam_of[attempt], rng)
        expected += expected_items(event, plan)
        log_records.append((log_key(event), encode_event(event)))
    t_produce = time.perf_counter()
    await produce(kafka, kafka.events_topic, log_records)
    produce_s = time.perf_counter() - t_produce
    mean_event_bytes = sum(len(v) for _, v in log_records) / len(log_records)
    del log_records

    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=50, max_partition_fetch_bytes=4 << 20,
        check_crcs=False,
    )
    await reader.start()
    reader.assign([TopicPartition(kafka.deliveries_topic, p) for p in range(args.slots)])

    ops_port = free_port()
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
            "PROCTOR_ROUTER__GROUP_ID": f"bench-router-{run_id}",
            "PROCTOR_ROUTER__OPS_PORT": str(ops_port),
            "PROCTOR_LOG_LEVEL": "WARNING",
        }
    )
    if args.batch_max:
        env["PROCTOR_ROUTER__BATCH_MAX_EVENTS"] = str(args.batch_max)
    if args.within:
        env["PROCTOR_ROUTER__BATCH_WITHIN_S"] = str(args.within)
    command = [sys.executable, "-m", "services.router"]
    if args.profile:
        renderer = "html" if args.profile.endswith(".html") else "text"
        command = [sys.executable, "-m", "pyinstrument", "-o", args.profile, "-r", renderer,
                   "-m", "services.router"]
    started = time.perf_counter()
    router = subprocess.Popen(command, cwd=REPO, env=env)
    cpu_start = cpu_at_first = cpu_at_last = 0.0
    first = last = 0.0
    received = 0
    kinds: Counter[str] = Counter()
    validated = invalid = 0
    first_invalid = ""
    try:
        cpu_start = cpu_seconds(router.pid)
        deadline = time.monotonic() + args.timeout
        while received < expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {received}/{expected} items")
            if router.poll() is not None:
                raise SystemExit(f"router exited with {router.returncode}")
            batches = await reader.getmany(timeout_ms=200, max_records=5000)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if validated < 200:
                        validated += 1
                        try:
                            DELIVERY_BATCH.validate_json(record.value)
                        except ValidationError as exc:
                            invalid += 1
                            first_invalid = first_invalid or str(exc).splitlines()[-3].strip()
                    if not first:
                        first = now
                        cpu_at_first = cpu_seconds(router.pid)
                    # Counting by bytes keeps the reader cheap: it shares the 2 cores with
                    # the router and Kafka. Event values never contain these markers.
                    value = record.value
                    for_proctors = value.count(b'"kind":"for_proctors"')
                    for_students = value.count(b'"kind":"for_students"')
                    kinds["for_proctors"] += for_proctors
                    kinds["for_students"] += for_students
                    kinds["watch_ready"] += value.count(b'"kind":"watch_ready"')
                    received += for_proctors + for_students
            if batches:
                last = now
        cpu_at_last = cpu_seconds(router.pid)
        metrics = scrape(ops_port)
    finally:
        router.terminate()
        try:
            router.wait(timeout=60)
        except subprocess.TimeoutExpired:
            router.kill()
        await reader.stop()
        if not args.keep:
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
            await admin.start()
            try:
                await admin.delete_topics(
                    [kafka.events_topic, kafka.presence_topic, kafka.heartbeats_topic,
                     kafka.deliveries_topic]
                )
            finally:
                await admin.close()

    window = last - first
    cpu = cpu_at_last - cpu_at_first
    batches_count = metrics.get("router_batch_events_count", 0.0)
    return {
        "events": args.events,
        "log_partitions": args.partitions,
        "slots": args.slots,
        "exams": args.exams,
        "students": len(attempts),
        "watchers_per_exam": args.watchers,
        "mean_event_bytes": round(mean_event_bytes, 1),
        "expected_items": expected,
        "received_items": received,
        "items_by_kind": dict(kinds),
        "schema_checked_records": validated,
        "schema_invalid_records": invalid,
        "schema_first_error": first_invalid,
        "backlog_produce_s": round(produce_s, 2),
        "router_start_to_first_delivery_s": round(first - started, 2),
        "window_s": round(window, 3),
        "events_per_s": round(args.events / window) if window > 0 else None,
        "items_per_s": round(received / window) if window > 0 else None,
        "router_cpu_s": round(cpu, 2),
        "router_cpu_startup_s": round(cpu_at_first - cpu_start, 2),
        "router_cpu_util": round(cpu / window, 2) if window > 0 else None,
        "router_cpu_per_event_us": round(cpu / args.events * 1e6, 1),
        "router_mean_batch_events": round(metrics["router_batch_events_sum"] / batches_count, 1)
        if batches_count
        else None,
        "router_metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12, help="log partitions")
    parser.add_argument("--slots", type=int, default=8, help="gateway slots (deliveries partitions)")
    parser.add_argument("--exams", type=int, default=20)
    parser.add_argument("--students-per-exam", type=int, default=500)
    parser.add_argument("--watchers", type=int, default=2, help="slots watching each exam")
    parser.add_argument("--batch-max", type=int, default=0, help="override router batch size")
    parser.add_argument("--within", type=float, default=0.0, help="override router batch wait")
    parser.add_argument("--bootstrap", default=os.environ.get("PROCTOR_KAFKA__BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", default="", help="write a pyinstrument HTML profile here")
    parser.add_argument("--keep", action="store_true", help="keep the bench topics")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
