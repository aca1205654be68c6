"""Dead letters: log records a consumer cannot apply, put aside on ``<topic>.dead-letters``.

A record that fails for a reason that will not go away by retrying (it does not decode, or a
store rejects what it makes as invalid, e.g. DynamoDB's "Number overflow" for a score of
1e308) must not stall its partition: every later record of every exam on it would wait
behind it for ever, and a restart would meet it again. Instead the consumer writes it here,
and its offset is committed past it only once the dead letter is in Kafka.

The value is ``DeadLetter`` as JSON: where the record was (topic, partition, offset), its key
and value (UTF-8 text when it is text, else base64), which consumer gave up on it, why
(``reason``: a short label, also the metric label) and the error, when, and for a derived
write (status's DynamoDB item) the item that was refused. The key is the original key, so a
dead-letter topic keeps an attempt's letters together.

Inspect and replay (docs/architecture.md, "Dead letters")::

    python -m adapters.dead_letters show [--topic exam.events]
    python -m adapters.dead_letters replay --offset N [--topic exam.events]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import sys
import time
from collections.abc import Awaitable
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field

from adapters.kafka_clients import durable_producer, reader
from adapters.kafka_topics import dead_letter_topic, partition_count
from adapters.settings import CommonSettings, KafkaSettings

Encoding = Literal["utf-8", "base64"]


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(description="topic of the record put aside")
    partition: int = Field(description="its partition")
    offset: int = Field(description="its offset")
    key: str | None = Field(default=None, description="its key (see key_encoding)")
    key_encoding: Encoding = "utf-8"
    value: str | None = Field(default=None, description="its value (see value_encoding)")
    value_encoding: Encoding = "utf-8"
    consumer: str = Field(description="the consumer that gave up on it, e.g. status")
    reason: str = Field(description="short label: undecodable, unroutable, store_rejected")
    error: str = Field(max_length=2000, description="what went wrong")
    at_ms: int = Field(description="when it was put aside (epoch ms)")
    item: dict[str, Any] | None = Field(
        default=None, description="for a refused derived write: the item as it was sent"
    )

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        consumer: str,
        reason: str,
        error: str,
        item: dict[str, Any] | None = None,
    ) -> DeadLetter:
        key_text, key_encoding = _text(key)
        value_text, value_encoding = _text(value)
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key_text,
            key_encoding=key_encoding,
            value=value_text,
            value_encoding=value_encoding,
            consumer=consumer,
            reason=reason,
            error=error[:2000],
            at_ms=time.time_ns() // 1_000_000,
            item=item,
        )

    @classmethod
    def of_record(
        cls,
        record: Any,
        *,
        topic: str,
        consumer: str,
        reason: str,
        error: str,
        item: dict[str, Any] | None = None,
    ) -> DeadLetter:
        """A letter for a consumed record (anything with partition, offset, key, value)."""
        return cls.of(
            topic=topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            consumer=consumer,
            reason=reason,
            error=error,
            item=item,
        )

    def original_key(self) -> bytes | None:
        return _bytes(self.key, self.key_encoding)

    def original_value(self) -> bytes | None:
        return _bytes(self.value, self.value_encoding)


def _text(raw: bytes | None) -> tuple[str | None, Encoding]:
    if raw is None:
        return None, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _bytes(text: str | None, encoding: Encoding) -> bytes | None:
    if text is None:
        return None
    return base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")


class DeadLetterWriter:
    """Puts records aside with its own idempotent, acks=all producer."""

    def __init__(self, kafka: KafkaSettings, *, client_id: str) -> None:
        self._kafka = kafka
        self._producer: AIOKafkaProducer = durable_producer(kafka, client_id=client_id)
        self._started = False

    async def start(self) -> None:
        async with asyncio.timeout(self._kafka.request_timeout_s * 3):
            await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        # Flushes what is queued; safe whether or not it started.
        await self._producer.stop()
        self._started = False

    async def send(self, letter: DeadLetter) -> Awaitable[Any]:
        """Queue the letter; the returned future resolves once Kafka has it."""
        async with asyncio.timeout(self._kafka.request_timeout_s):
            future: Awaitable[Any] = await self._producer.send(
                dead_letter_topic(letter.topic),
                letter.model_dump_json().encode(),
                key=letter.original_key(),
            )
        return future

    async def put_aside(self, letter: DeadLetter) -> None:
        """Return once Kafka has the letter (raises ``KafkaError`` or ``TimeoutError``)."""
        future = await self.send(letter)
        async with asyncio.timeout(self._kafka.request_timeout_s):
            await future


async def read_record(
    kafka: KafkaSettings, topic: str, partition: int, offset: int, *, client_id: str
) -> tuple[bytes | None, bytes | None] | None:
    """The key and value of one log record (None if it is gone), for a letter about a write
    derived from it. Bounded by the Kafka request timeout."""
    consumer = reader(kafka, client_id=client_id)
    tp = TopicPartition(topic, partition)
    try:
        async with asyncio.timeout(kafka.request_timeout_s):
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, offset)
            while True:
                fetched = await consumer.getmany(tp, timeout_ms=200, max_records=1)
                for record in fetched.get(tp, []):
                    if record.offset != offset:
                        return None  # deleted by retention
                    return record.key, record.value
    except TimeoutError:
        return None
    finally:
        await consumer.stop()


async def read_letters(kafka: KafkaSettings, topic: str) -> list[DeadLetter]:
    """Every dead letter of ``topic`` so far, in partition order."""
    name = dead_letter_topic(topic)
    tps = [TopicPartition(name, p) for p in range(await partition_count(kafka, name))]
    if not tps:
        return []
    consumer = reader(kafka, client_id="dead-letters-show")
    letters: list[DeadLetter] = []
    try:
        async with asyncio.timeout(kafka.request_timeout_s * 3):
            await consumer.start()
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                fetched = await consumer.getmany(timeout_ms=200)
                for records in fetched.values():
                    letters.extend(DeadLetter.model_validate_json(r.value) for r in records)
    finally:
        await consumer.stop()
    return letters


async def _show(kafka: KafkaSettings, topic: str) -> None:
    for letter in await read_letters(kafka, topic):
        print(letter.model_dump_json())


async def _replay(kafka: KafkaSettings, topic: str, offset: int, partition: int | None) -> None:
    matches = [
        letter
        for letter in await read_letters(kafka, topic)
        if letter.offset == offset and (partition is None or letter.partition == partition)
    ]
    if len(matches) != 1:
        raise SystemExit(f"{len(matches)} dead letters at offset {offset}; give --partition")
    letter = matches[0]
    producer = durable_producer(kafka, client_id="dead-letters-replay")
    async with asyncio.timeout(kafka.request_timeout_s * 3):
        await producer.start()
        try:
            meta = await producer.send_and_wait(
                letter.topic, letter.original_value(), key=letter.original_key()
            )
        finally:
            await producer.stop()
    print(f"replayed {letter.partition}:{letter.offset} as {meta.partition}:{meta.offset}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="inspect or replay dead letters")
    parser.add_argument("command", choices=["show", "replay"])
    parser.add_argument("--topic", help="the original topic (default: the event log)")
    parser.add_argument("--offset", type=int, help="replay: the original offset")
    parser.add_argument("--partition", type=int, help="replay: the original partition")
    args = parser.parse_args(argv)
    kafka = CommonSettings().kafka
    topic = args.topic or kafka.events_topic
    try:
        if args.command == "show":
            asyncio.run(_show(kafka, topic))
        elif args.offset is None:
            parser.error("replay needs --offset")
        else:
            asyncio.run(_replay(kafka, topic, args.offset, args.partition))
    except binascii.Error as exc:
        print(f"corrupt dead letter: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
