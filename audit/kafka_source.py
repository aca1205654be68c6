"""Reading a bounded span of the exam log, partition by partition, in offset order.

The span is fixed when the read starts: per partition from the first offset whose record
timestamp is at or after ``--from`` minus the clock slack (``offsets_for_times``; the
beginning without ``--from``), up to the first offset at or after ``--to`` plus the slack, or
the end offset captured at start. Records appended later are not read, so a report is a
consistent cut of the log even while an exam is running. One partition at a time keeps the
output deterministic (the same span exports to the same bytes) and per-attempt ordered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka_security import client_kwargs
from adapters.settings import KafkaSettings
from audit.errors import LogUnavailable
from audit.times import TimeRange


@dataclass(frozen=True, slots=True)
class RawRecord:
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True)
class LogSpan:
    topic: str
    ranges: dict[int, tuple[int, int]]  # partition -> (first offset, end offset exclusive)

    @property
    def total(self) -> int:
        return sum(end - start for start, end in self.ranges.values())

    def describe(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": {str(p): [s, e] for p, (s, e) in sorted(self.ranges.items())},
        }


class LogSource:
    """A group-less consumer on the log topic; ``open``/``close`` around use."""

    def __init__(self, kafka: KafkaSettings, *, client_id: str, max_records: int = 5000) -> None:
        self._kafka = kafka
        self._timeout = kafka.request_timeout_s
        self._max_records = max_records
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            **client_kwargs(kafka),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=max_records,
            # Bulk reading: big fetches, few round trips.
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_wait_ms=100,
            request_timeout_ms=int(self._timeout * 1000) + 30_000,
        )

    async def open(self) -> None:
        try:
            async with asyncio.timeout(self._timeout * 3):
                await self._consumer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._consumer.stop()
            raise LogUnavailable(f"Kafka at {self._kafka.bootstrap}: {exc!r}") from exc

    async def close(self) -> None:
        await self._consumer.stop()

    async def plan(self, span: TimeRange, *, slack_ms: int) -> LogSpan:
        topic = self._kafka.events_topic
        try:
            async with asyncio.timeout(self._timeout):
                partitions = self._consumer.partitions_for_topic(topic)
                if not partitions:
                    partitions = await self._partitions(topic)
                tps = [TopicPartition(topic, p) for p in sorted(partitions)]
                starts = await self._consumer.beginning_offsets(tps)
                ends = await self._consumer.end_offsets(tps)
                start_ms, end_ms = span.lookup_start(slack_ms), span.lookup_end(slack_ms)
                if start_ms is not None:
                    found = await self._consumer.offsets_for_times({tp: start_ms for tp in tps})
                    starts = {
                        tp: ends[tp] if found[tp] is None else max(starts[tp], found[tp].offset)
                        for tp in tps
                    }
                if end_ms is not None:
                    found = await self._consumer.offsets_for_times({tp: end_ms for tp in tps})
                    ends = {
                        tp: ends[tp] if found[tp] is None else min(ends[tp], found[tp].offset)
                        for tp in tps
                    }
        except (KafkaError, OSError, TimeoutError) as exc:
            raise LogUnavailable(f"offsets of {topic}: {exc!r}") from exc
        return LogSpan(topic, {tp.partition: (starts[tp], max(starts[tp], ends[tp])) for tp in tps})

    async def _partitions(self, topic: str) -> set[int]:
        # A fresh consumer knows no topic yet: fetch the metadata (aiokafka has no public call
        # that both fetches and stores it for partitions_for_topic).
        await self._consumer._client.force_metadata_update()  # noqa: SLF001
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            raise LogUnavailable(f"topic {topic} does not exist")
        return set(partitions)

    async def read(self, span: LogSpan) -> AsyncIterator[list[RawRecord]]:
        """Batches of records, partition after partition, each in offset order."""
        consumer = self._consumer
        for partition, (start, end) in sorted(span.ranges.items()):
            if start >= end:
                continue
            tp = TopicPartition(span.topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            position = start
            idle = 0
            while position < end and idle < 5:
                try:
                    async with asyncio.timeout(self._timeout * 3):
                        batch = await consumer.getmany(
                            tp, timeout_ms=1000, max_records=self._max_records
                        )
                except (KafkaError, OSError) as exc:
                    raise LogUnavailable(f"reading {tp}: {exc!r}") from exc
                except TimeoutError as exc:
                    raise LogUnavailable(f"reading {tp}: no answer") from exc
                records = [
                    RawRecord(partition, message.offset, message.value)
                    for message in batch.get(tp, ())
                    if message.offset < end
                ]
                if records:
                    idle = 0
                    position = records[-1].offset + 1
                    yield records
                elif batch.get(tp):
                    position = end
                else:
                    # Control records or aborted transactions can fill the span's tail: no
                    # record will come, and the consumer's position tells when it passed them.
                    moved = await consumer.position(tp)
                    idle = 0 if moved > position else idle + 1
                    position = moved
            consumer.assign([])
