"""Batched writes to Kafka: queue every record, then wait once for all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.notifier.errors import WriteFailed

Record = tuple[bytes, bytes]  # key, value


class Writer:
    def __init__(self, producer: AIOKafkaProducer, *, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s

    async def write(self, topic: str, records: Sequence[Record]) -> None:
        """Return once Kafka has every record; raise ``WriteFailed`` otherwise."""
        if not records:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = [
                    await self._producer.send(topic, value, key=key) for key, value in records
                ]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as exc:
            raise WriteFailed(f"{len(records)} records to {topic}: {exc!r}") from exc
