"""Writes to Kafka that outlast a stalled log.

Verdicts and alerts must land, and the notifier must not die of a Kafka stall (a restart
forgets nothing but re-reads a lot), so ``write`` waits as long as it takes: each record is
sent once and its delivery awaited; only a record whose delivery failed is sent again, so a
slow log yields no duplicates. Every ``timeout_s`` without progress is logged and counted.
Cancellation (shutdown) is the only way out before everything has landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from domain.backoff import Backoff
from services.notifier.errors import WriteFailed
from services.notifier.metrics import NotifierMetrics

log = structlog.get_logger(__name__)

Record = tuple[bytes, bytes]  # key, value
_MAX_BACKOFF_S = 5.0


class Writer:
    def __init__(
        self, producer: AIOKafkaProducer, metrics: NotifierMetrics, *, timeout_s: float
    ) -> None:
        self._producer = producer
        self._metrics = metrics
        self._timeout_s = timeout_s

    async def write(self, topic: str, records: Sequence[Record]) -> None:
        """Return once Kafka has every record, however long the log is unavailable."""
        pending = list(records)
        backoff = Backoff(0.1, _MAX_BACKOFF_S)
        while pending:
            failed: list[Record] = []
            waiting: dict[asyncio.Future[object], Record] = {}
            for key, value in pending:
                try:
                    waiting[await self._send(topic, key, value)] = (key, value)
                except WriteFailed:
                    failed.append((key, value))
            while waiting:
                done, _ = await asyncio.wait(waiting, timeout=self._timeout_s)
                if not done:
                    self._metrics.write_retries.labels(topic).inc()
                    log.warning("kafka_write_waiting", topic=topic, records=len(waiting))
                    continue
                for future in done:
                    record = waiting.pop(future)
                    if future.exception() is not None:
                        failed.append(record)
            if failed:
                self._metrics.write_retries.labels(topic).inc()
                log.warning("kafka_write_failed", topic=topic, records=len(failed))
                await asyncio.sleep(backoff.next())
            pending = failed

    async def enqueue(
        self, topic: str, key: bytes, value: bytes, *, partition: int | None = None
    ) -> None:
        """Queue one record without waiting for it to land (best effort, bounded)."""
        await self._send(topic, key, value, partition)

    async def _send(
        self, topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> asyncio.Future[object]:
        # send() only waits when the producer's buffer is full, which a long stall reaches.
        try:
            async with asyncio.timeout(self._timeout_s):
                future: asyncio.Future[object] = await self._producer.send(
                    topic, value, key=key, partition=partition
                )
                return future
        except (KafkaError, TimeoutError) as exc:
            self._metrics.write_retries.labels(topic).inc()
            log.warning("kafka_send_refused", topic=topic, error=repr(exc))
            raise WriteFailed(f"record to {topic} not queued: {exc!r}") from exc
