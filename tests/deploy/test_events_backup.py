"""Backing up the events topic and restoring it: every record comes back at its offset, with
its key, value, timestamp and headers, and a restore never writes into a topic that has
records already."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from adapters.kafka_clients import durable_producer, reader
from adapters.kafka_topics import delete_topics, ensure_topics
from adapters.settings import CommonSettings, KafkaSettings
from deploy.events_backup import RestoreRefused, dump, restore

pytestmark = pytest.mark.integration


async def read_all(kafka: KafkaSettings, topic: str, partitions: int) -> list[tuple[Any, ...]]:
    consumer = reader(kafka, client_id="backup-test")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        seen: list[tuple[Any, ...]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen += [
                    (r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers))
                    for r in records
                ]
        return sorted(seen)
    finally:
        await consumer.stop()


async def test_a_restored_topic_has_every_record_at_its_offset(
    infra: CommonSettings, tmp_path: Path
) -> None:
    run = f"backup-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings.for_run(run, bootstrap=infra.kafka.bootstrap, events_partitions=3)
    restored = kafka.model_copy(update={"events_topic": f"{run}.events-restored"})
    await ensure_topics(kafka)
    try:
        producer = durable_producer(kafka, client_id="backup-test")
        await producer.start()
        try:
            for n in range(250):
                # Partition 2 stays empty: an empty partition must come back empty.
                await producer.send(
                    kafka.events_topic,
                    key=f"attempt-{n % 7}".encode(),
                    value=f'{{"n": {n}}}'.encode(),
                    partition=n % 2,
                    headers=[("source", b"test")] if n % 50 == 0 else None,
                )
            await producer.flush()
        finally:
            await producer.stop()
        backup = tmp_path / "events.jsonl.gz"

        header = await dump(kafka, backup)
        assert (header["records"], header["end_offsets"]) == (250, [125, 125, 0])

        assert await restore(restored, backup) == 250
        original = await read_all(kafka, kafka.events_topic, 3)
        copy = await read_all(restored, restored.events_topic, 3)
        assert len(original) == 250
        assert copy == original

        with pytest.raises(RestoreRefused, match="not empty"):
            await restore(restored, backup)
    finally:
        await delete_topics(kafka)
        await delete_topics(restored)
