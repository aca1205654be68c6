"""Reading the compacted presence topic whole, with a plain aiokafka consumer.

Every router worker must know every watch and every student connection, whatever log
partitions it owns, so presence is read from the beginning of every partition with manual
assignment and no consumer group. Not a Faust ``GlobalTable``:
- a table is a key -> value map filled silently by recovery and standby reads; routing
  needs every record applied in order with its side effect (a new ``ExamWatch`` must be
  answered with ``WatchReady``), and "caught up to the end offsets seen at start";
- pointing a table at a topic it does not own (``changelog_topic=``) has a record of not
  recovering (robinhood/faust#523), and global tables of missing records after recovery
  and across several workers (faust-streaming/faust#212, #283). A plain consumer is a
  few lines and exact.

``catch_up`` reads until the consumer's position reaches the end offsets seen at start;
the router routes no log event before that (the Faust app is only started afterwards), so
a restarted router never routes with a partial table. ``fetch`` then returns what arrives
later, for the service to apply under its routing lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from adapters.kafka_security import client_kwargs
from adapters.kafka_topics import gateway_slots, partition_count
from adapters.settings import KafkaSettings
from schemas.presence import PresenceRecord, decode_presence
from services.router.errors import StartupFailed
from services.router.metrics import RouterMetrics

log = structlog.get_logger(__name__)

_POLL_MS = 200


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    key: bytes
    record: PresenceRecord | None


class PresenceReader:
    def __init__(self, kafka: KafkaSettings, *, client_id: str, metrics: RouterMetrics) -> None:
        self._kafka = kafka
        self._metrics = metrics
        # Not adapters.kafka_clients.reader: its 5 ms fetch wait suits the hot deliveries
        # partitions, but here it would cost 200 idle fetches a second on the routing loop.
        # The broker answers a fetch as soon as a record arrives, so latency is unchanged.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            **client_kwargs(kafka),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=500,
            max_poll_records=2000,
            request_timeout_ms=int(kafka.request_timeout_s * 1000),
        )
        self._partitions: list[TopicPartition] = []
        # Slots with a deliveries partition: presence naming another would have routing send
        # to a partition that does not exist, which fails the whole batch, every exam's.
        self._slots = kafka.deliveries_partitions

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The underlying group-less consumer (also used for offset look-ups)."""
        return self._consumer

    async def start(self) -> None:
        timeout = self._kafka.request_timeout_s
        topic = self._kafka.presence_topic
        try:
            async with asyncio.timeout(timeout * 3):
                await self._consumer.start()
                # Assigning partition 0 (every topic has one) makes the consumer track the
                # topic's metadata; then every partition is known and assigned.
                self._consumer.assign([TopicPartition(topic, 0)])
                while (partitions := self._consumer.partitions_for_topic(topic)) is None:
                    await asyncio.sleep(0.05)
            self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
            self._consumer.assign(self._partitions)
            async with asyncio.timeout(timeout):
                await self._consumer.seek_to_beginning(*self._partitions)
            async with asyncio.timeout(timeout * 3):
                found = await partition_count(self._kafka, self._kafka.deliveries_topic)
            self._slots = gateway_slots(self._kafka, found)
        except (TimeoutError, KafkaError) as exc:
            raise StartupFailed(
                f"presence topic {topic!r} unreachable or missing: {exc!r}"
            ) from exc

    async def stop(self) -> None:
        await self._consumer.stop()

    def topic_missing(self) -> bool:
        """Whether the latest metadata no longer knows the presence topic (it was deleted)."""
        return self._consumer.partitions_for_topic(self._kafka.presence_topic) is None

    async def catch_up(self, apply: Callable[[PresenceEntry], object], timeout_s: float) -> int:
        """Apply everything in the topic up to the end offsets as they are now."""
        count = 0
        try:
            async with asyncio.timeout(timeout_s):
                ends = await self._consumer.end_offsets(self._partitions)
                while not await self._reached(ends):
                    for entry in await self.fetch():
                        apply(entry)
                        count += 1
        except TimeoutError as exc:
            raise StartupFailed(
                f"presence not read to its end within {timeout_s}s ({count} records so far)"
            ) from exc
        log.info(
            "presence caught up", records=count, ends={tp.partition: o for tp, o in ends.items()}
        )
        return count

    async def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def fetch(self) -> Sequence[PresenceEntry]:
        """The next records (possibly none after a short wait), decoded; bad ones skipped."""
        batches = await self._consumer.getmany(timeout_ms=_POLL_MS, max_records=2000)
        entries: list[PresenceEntry] = []
        for records in batches.values():
            for record in records:
                entry = self._decode(record.key, record.value, record.offset)
                if entry is not None:
                    entries.append(entry)
        return entries

    def _decode(self, key: bytes | None, value: bytes | None, offset: int) -> PresenceEntry | None:
        if key is None:
            self._metrics.bad_presence.inc()
            log.warning("presence record without key skipped", offset=offset)
            return None
        if value is None:
            return PresenceEntry(key, None)
        try:
            record = decode_presence(value)
        except ValidationError as exc:
            self._metrics.bad_presence.inc()
            log.warning(
                "undecodable presence record skipped",
                key=key.decode(errors="replace"),
                offset=offset,
                error=str(exc).splitlines()[0],
            )
            return None
        slot = record.slot
        if slot is not None and slot >= self._slots:
            self._metrics.bad_presence.inc()
            log.warning(
                "presence record for a slot without a deliveries partition skipped"
                " (restart the router after growing the deliveries topic)",
                key=key.decode(errors="replace"),
                offset=offset,
                slot=slot,
                slots=self._slots,
            )
            return None
        return PresenceEntry(key, record)
