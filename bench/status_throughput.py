"""How fast the status service folds a log backlog, and how many DynamoDB writes it makes.

Writes N events for M attempts (each: a connect, then status/progress/answer updates) to a
fresh topic, then runs the status service in-process on it (fresh group, Redis namespace and
DynamoDB table, all removed afterwards) and reports events/s until the Redis watermarks reach
the log end and until every offset is committed (DynamoDB written), plus the coalescing ratio.

    .venv/bin/python bench/status_throughput.py --events 50000 --attempts 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid

import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from adapters.dynamo_store import DynamoStatusStore
from adapters.kafka_clients import durable_producer
from adapters.kafka_topics import ensure_topics
from adapters.logs import configure_logging
from adapters.settings import CommonSettings, DynamoSettings, KafkaSettings, RedisSettings
from schemas.events import (
    EventSource,
    ExamEvent,
    StudentAnswer,
    StudentConnected,
    StudentProgress,
    StudentStatus,
)
from services.status.service import StatusService
from services.status.settings import Settings, StatusServiceSettings


def make_events(total: int, attempts: int, exams: int, seed: int) -> list[ExamEvent]:
    rng = random.Random(seed)
    now = 1_700_000_000_000
    per_attempt = max(1, total // attempts)
    streams: list[list[ExamEvent]] = []
    for n in range(attempts):
        exam, attempt, student = f"bench-exam-{n % exams}", f"bench-att-{n}", f"stu-{n}"
        source = EventSource(kind="student", id=student, gateway=0)
        common = {"exam": exam, "attempt": attempt, "student": student, "source": source}
        events: list[ExamEvent] = [
            StudentConnected(
                id=f"{attempt}-0",
                ts=now,
                conn=f"c{n}",
                gateway=0,
                name=student,
                time_end=now + 3_600_000,
                **common,
            )
        ]
        for k in range(1, per_attempt):
            ts, event_id = now + k * 5000, f"{attempt}-{k}"
            roll = rng.random()
            if roll < 0.4:
                events.append(
                    StudentProgress(
                        id=event_id,
                        ts=ts,
                        client_seq=k,
                        answered=k % 40,
                        total=40,
                        question_current=k % 40,
                        time_remaining_s=3600 - k * 5,
                        **common,
                    )
                )
            elif roll < 0.8:
                events.append(
                    StudentStatus(
                        id=event_id,
                        ts=ts,
                        client_seq=k,
                        status=rng.choice(("active", "away")),
                        **common,
                    )
                )
            else:
                events.append(
                    StudentAnswer(
                        id=event_id, ts=ts, client_seq=k, question=k % 40, answer="B", **common
                    )
                )
        streams.append(events)
    # Interleave attempts the way a live exam does: everyone progresses at once.
    interleaved: list[ExamEvent] = []
    for k in range(per_attempt):
        interleaved.extend(stream[k] for stream in streams if k < len(stream))
    return interleaved[:total]


async def produce(kafka: KafkaSettings, events: list[ExamEvent]) -> float:
    from schemas.events import encode_event, log_key

    producer = durable_producer(kafka, client_id="bench-status", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [
            await producer.send(kafka.events_topic, encode_event(e), key=log_key(e)) for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def committed_total(kafka: KafkaSettings, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


async def main(args: argparse.Namespace) -> dict[str, object]:
    base = CommonSettings()
    run = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = base.kafka.model_copy(
        update={
            "events_topic": f"{run}.events",
            "presence_topic": f"{run}.presence",
            "heartbeats_topic": f"{run}.heartbeats",
            "deliveries_topic": f"{run}.deliveries",
            "events_partitions": args.partitions,
            "deliveries_partitions": 1,
        }
    )
    redis_settings = RedisSettings(url=base.redis.url, key_prefix=f"{run}:")
    dynamo_settings = DynamoSettings(endpoint=base.dynamo.endpoint, table=f"{run}-first-attempts")
    await ensure_topics(kafka)
    events = make_events(args.events, args.attempts, args.exams, args.seed)
    produce_s = await produce(kafka, events)

    group = f"{run}-status"
    settings = Settings(
        kafka=kafka,
        redis=redis_settings,
        dynamo=dynamo_settings,
        log_level="WARNING",
        status=StatusServiceSettings(
            group_id=group,
            ops_port=0,
            flush_interval_ms=args.flush_interval_ms,
            dynamo_workers=args.dynamo_workers,
        ),
    )
    service = StatusService(settings)
    client = aioredis.Redis.from_url(redis_settings.url)
    watermarks_key = f"{redis_settings.key_prefix}watermarks:{kafka.events_topic}"
    started = time.perf_counter()
    task = asyncio.create_task(service.run())
    redis_done_s: float | None = None
    try:
        while True:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
            if redis_done_s is None:
                marks = await client.hgetall(watermarks_key)
                if sum(int(o) + 1 for o in marks.values()) >= len(events):
                    redis_done_s = time.perf_counter() - started
            if redis_done_s is not None and await committed_total(kafka, group) >= len(events):
                break
        committed_s = time.perf_counter() - started
    finally:
        service.request_stop()
        await task
        keys = [key async for key in client.scan_iter(match=f"{redis_settings.key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        table = DynamoStatusStore(dynamo_settings)
        await table.open(create_table=False)
        await table.delete_table()
        await table.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        await admin.delete_topics(
            [
                kafka.events_topic,
                kafka.presence_topic,
                kafka.heartbeats_topic,
                kafka.deliveries_topic,
            ]
        )
        await admin.close()

    def sample(name: str, **labels: str) -> float:
        return service.registry.get_sample_value(name, labels or None) or 0.0

    writes = sum(
        sample("status_dynamo_writes_total", outcome=o) for o in ("written", "refused", "failed")
    )
    state_changes = sample("status_state_changes_total")
    assert redis_done_s is not None
    return {
        "events": len(events),
        "attempts": args.attempts,
        "partitions": args.partitions,
        "produce_s": round(produce_s, 2),
        "redis_caught_up_s": round(redis_done_s, 2),
        "events_per_s_to_redis": round(len(events) / redis_done_s),
        "committed_s": round(committed_s, 2),
        "events_per_s_committed": round(len(events) / committed_s),
        "redis_state_writes": int(state_changes),
        "dynamo_updates_offered": int(sample("status_dynamo_updates_total")),
        "dynamo_writes": int(writes),
        "dynamo_written": int(sample("status_dynamo_writes_total", outcome="written")),
        "dynamo_refused": int(sample("status_dynamo_writes_total", outcome="refused")),
        "events_per_dynamo_write": round(len(events) / writes, 1) if writes else None,
        "batches": int(sample("status_batch_seconds_count")),
        "batch_seconds_total": round(sample("status_batch_seconds_sum"), 2),
        "state_loads_from_redis": int(sample("status_state_loads_total")),
        "flushes": int(sample("status_dynamo_flush_seconds_count")),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--attempts", type=int, default=2_000)
    parser.add_argument("--exams", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--flush-interval-ms", type=int, default=200)
    parser.add_argument("--dynamo-workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    import uvloop

    configure_logging("WARNING")
    print(json.dumps(uvloop.run(main(parser.parse_args())), indent=2))
