"""The broker's CPU for the Kafka traffic the card needs, with none of the project's services.

How low can this project's CPU per update go while Kafka carries every update? This drives
the real broker with the traffic the card's shape requires at a given rate, from minimal
clients that do nothing else, and reports the broker's CPU per update:

- two "gateways" (one process each) produce the updates, half each, one record per update
  at its own time (acks=all, idempotent: ``durable_producer``); aiokafka batches whatever
  arrives while a request is in flight, as the gateways do;
- a "router" (group consumer, the router's 16 KiB / 5 ms fetch window) reads the events and
  produces one deliveries record per slot per fetched batch, waits for them, commits every
  second;
- two "inboxes" (group-less readers, one per deliveries partition) read the deliveries, and
  time each update from its send to its arrival;
- a "status" group consumer reads the events with a 64 KiB / 100 ms window (off the
  latency path) and commits every second.

No id checks, no acks to clients, no heartbeats, no alerts, no state, no DynamoDB: a floor,
not a model. The clients' own CPU is not counted; only Kafka's (``/proc``, from the pid that
``infra/stack`` recorded), over the measured window.

A broker started moments ago is still compiling and costs more: run it once first, then
measure (docs/benchmarks.md, "Seventh round").

Usage (the local stack up, nothing else running)::

    .venv/bin/python bench/kafka_floor.py --rate 2000 --duration 40
    .venv/bin/python bench/kafka_floor.py --rate 200 --duration 40

Its topics (``kafkafloor-<run>.*``, made like every run's by ``ensure_topics``) are deleted
afterwards. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop
from aiokafka import TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.kafka_clients import durable_producer, group_consumer, reader  # noqa: E402
from adapters.kafka_topics import delete_topics, ensure_topics  # noqa: E402
from adapters.settings import CommonSettings, KafkaSettings  # noqa: E402
from simulator.resources import infra_pids, process_cpu_s  # noqa: E402

_STAMP = struct.Struct("!d")  # send time (time.time()) at the head of each value
_VALUE_BYTES = 400  # about a student frame's event in the log
_SLOTS = 2


def _kafka(run: str) -> KafkaSettings:
    """The run's own topics, on the Kafka the settings name (PROCTOR_KAFKA__BOOTSTRAP)."""
    return KafkaSettings.for_run(
        f"kafkafloor-{run}",
        bootstrap=CommonSettings().kafka.bootstrap,
        events_partitions=12,
        deliveries_partitions=_SLOTS,
    )


async def _gateway(kafka: KafkaSettings, rate: float, duration: float, tick_s: float) -> None:
    events = kafka.events_topic
    producer = durable_producer(kafka, client_id="floor-gateway")
    await producer.start()
    pad = b"x" * (_VALUE_BYTES - _STAMP.size)
    pending: list[asyncio.Future[Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    try:
        while (now := loop.time()) - start < duration:
            due = int((now - start) * rate)
            while sent < due:
                key = b"attempt-%d" % random.randrange(5000)
                value = _STAMP.pack(time.time()) + pad
                pending.append(await producer.send(events, value, key=key))
                sent += 1
            if len(pending) > 5000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(tick_s)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _router(kafka: KafkaSettings, group: str, stop: asyncio.Event) -> None:
    deliveries = kafka.deliveries_topic
    consumer = group_consumer(
        kafka,
        kafka.events_topic,
        group_id=group,
        client_id="floor-router",
        fetch_max_wait_ms=5,
        fetch_min_bytes=16 * 1024,
    )
    producer = durable_producer(kafka, client_id="floor-router")
    await consumer.start()
    await producer.start()
    committed = time.monotonic()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            by_slot: list[list[bytes]] = [[] for _ in range(_SLOTS)]
            for records in batches.values():
                for record in records:
                    value = record.value or b""
                    by_slot[hash(record.key) % _SLOTS].append(value[: _STAMP.size])
            sends = [
                await producer.send(deliveries, b"".join(stamps), partition=slot)
                for slot, stamps in enumerate(by_slot)
                if stamps
            ]
            await asyncio.gather(*sends)
            if time.monotonic() - committed >= 1.0:
                await consumer.commit()
                committed = time.monotonic()
    finally:
        await producer.stop()
        await consumer.stop()


async def _inbox(kafka: KafkaSettings, slot: int, stop: asyncio.Event, lags: list[float]) -> None:
    consumer = reader(kafka, client_id=f"floor-inbox-{slot}")
    await consumer.start()
    partition = TopicPartition(kafka.deliveries_topic, slot)
    consumer.assign([partition])
    await consumer.seek_to_end(partition)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(partition, timeout_ms=200)
            now = time.time()
            for record in batches.get(partition, ()):
                value = record.value or b""
                for at in range(0, len(value), _STAMP.size):
                    lags.append(now - _STAMP.unpack_from(value, at)[0])
    finally:
        await consumer.stop()


async def _status(kafka: KafkaSettings, group: str, stop: asyncio.Event) -> None:
    consumer = group_consumer(
        kafka,
        kafka.events_topic,
        group_id=group,
        client_id="floor-status",
        fetch_max_wait_ms=100,
        fetch_min_bytes=64 * 1024,
    )
    await consumer.start()
    committed = time.monotonic()
    try:
        while not stop.is_set():
            await consumer.getmany(timeout_ms=200)
            if time.monotonic() - committed >= 1.0:
                await consumer.commit()
                committed = time.monotonic()
    finally:
        await consumer.stop()


async def _consumers(run: str, duration: float, warmup: float) -> None:
    kafka = _kafka(run)
    stop = asyncio.Event()
    lags: list[float] = []
    tasks = [
        asyncio.create_task(_router(kafka, f"kafkafloor-{run}-router", stop)),
        asyncio.create_task(_status(kafka, f"kafkafloor-{run}-status", stop)),
        *(asyncio.create_task(_inbox(kafka, slot, stop, lags)) for slot in range(_SLOTS)),
    ]
    print("ready", flush=True)
    await asyncio.sleep(warmup)
    lags.clear()
    await asyncio.sleep(duration)
    measured = sorted(lags)
    stop.set()
    await asyncio.gather(*tasks)
    n = len(measured)
    print(
        json.dumps(
            {
                "delivered": n,
                "p50_ms": round(measured[n // 2] * 1000, 2) if n else None,
                "p99_ms": round(measured[int(n * 0.99)] * 1000, 2) if n else None,
            }
        ),
        flush=True,
    )


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000, help="updates per second")
    parser.add_argument("--duration", type=float, default=40, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument(
        "--tick-ms",
        type=float,
        default=1.0,
        help="each gateway sends what fell due every this many ms (4: ~4 records a request"
        " at 2,000/s, as the gateways' id checks group them at S2)",
    )
    parser.add_argument("--role", choices=["gateway", "consumers"], help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "gateway":
        duration = args.warmup + args.duration + 1
        uvloop.run(_gateway(_kafka(args.run), args.rate / 2, duration, args.tick_ms / 1000))
        return
    if args.role == "consumers":
        uvloop.run(_consumers(args.run, args.duration, args.warmup))
        return

    run = uuid.uuid4().hex[:8]
    kafka_pid = infra_pids(ROOT / ".local" / "run").get("kafka")
    if kafka_pid is None:
        sys.exit("no Kafka recorded by infra/stack: run infra/stack up first")
    kafka = _kafka(run)
    asyncio.run(ensure_topics(kafka))
    warmup = args.warmup + 2  # the clients' start-up and group joins come first
    common = ["--run", run, "--rate", str(args.rate), "--duration", str(args.duration)]
    common += ["--tick-ms", str(args.tick_ms), "--warmup", str(warmup)]
    consumers = _spawn("--role", "consumers", *common)
    try:
        assert consumers.stdout is not None
        consumers.stdout.readline()  # ready
        gateways = [_spawn("--role", "gateway", *common) for _ in range(2)]
        time.sleep(warmup)
        cpu0, t0 = process_cpu_s(kafka_pid), time.monotonic()
        time.sleep(args.duration)
        cpu1, t1 = process_cpu_s(kafka_pid), time.monotonic()
        latency = json.loads(consumers.stdout.readline())
        for process in (*gateways, consumers):
            process.wait(timeout=60)
    finally:
        asyncio.run(delete_topics(kafka))
    assert cpu0 is not None and cpu1 is not None
    cores = (cpu1 - cpu0) / (t1 - t0)
    print(
        json.dumps(
            {
                "run": run,
                "rate": args.rate,
                "tick_ms": args.tick_ms,
                "kafka_cores": round(cores, 3),
                "kafka_us_per_update": round(cores / args.rate * 1e6, 1),
                **latency,
            }
        )
    )


if __name__ == "__main__":
    main()
