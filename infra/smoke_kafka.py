"""Smoke test: aiokafka against the local Kafka started by ``infra/stack up``.

Creates a fresh topic, produces with an idempotent producer (acks=all),
consumes everything back through a consumer group, commits, checks the
committed offset, then deletes the topic. Exits non-zero on any failure.

    .venv/bin/python infra/smoke_kafka.py [--bootstrap 127.0.0.1:19092] [-n 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def run(bootstrap: str, count: int, partitions: int, timeout_s: float) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:12]}"
    group = f"smoke-group-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
        print(f"created topic {topic} ({partitions} partitions)")

        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
        await producer.start()
        try:
            sent = set()
            futures = []
            for i in range(count):
                key = f"k{i % 7}".encode()
                value = f"message-{i}".encode()
                futures.append(await producer.send(topic, value=value, key=key))
                sent.add(value)
            metas = await asyncio.gather(*futures)
            print(
                f"produced {len(metas)} messages (idempotent, acks=all); "
                f"partitions used: {sorted({m.partition for m in metas})}"
            )
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            received = set()
            deadline = time.monotonic() + timeout_s
            while len(received) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out: received {len(received)}/{count} messages")
                batches = await consumer.getmany(timeout_ms=1000)
                for _tp, records in batches.items():
                    for r in records:
                        received.add(r.value)
            if received != sent:
                raise RuntimeError("consumed messages differ from produced ones")
            await consumer.commit()
            committed = 0
            for p in range(partitions):
                off = await consumer.committed(TopicPartition(topic, p))
                committed += off or 0
            if committed != count:
                raise RuntimeError(f"committed offsets sum {committed} != {count}")
            print(f"consumed {len(received)} messages with group {group}; committed {committed}")
        finally:
            await consumer.stop()

        await admin.delete_topics([topic])
        print(f"deleted topic {topic}")
    finally:
        await admin.close()
    print(f"kafka smoke OK in {time.monotonic() - t0:.1f}s")


def main() -> int:
    port = os.environ.get("PROCTOR_KAFKA_PORT", "19092")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default=f"127.0.0.1:{port}")
    ap.add_argument("-n", "--count", type=int, default=100)
    ap.add_argument("-p", "--partitions", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    try:
        asyncio.run(
            asyncio.wait_for(
                run(args.bootstrap, args.count, args.partitions, args.timeout),
                timeout=args.timeout + 30,
            )
        )
    except Exception as exc:  # noqa: BLE001 - smoke test reports any failure
        print(f"kafka smoke FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
