"""The group reader's commits: failures and timeouts are retried, never fatal (no broker:
the consumer is a stand-in; the services' tests run the reader against the real Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry, Counter

from adapters.group_reader import Batch, GroupReader, ReaderMetrics, ReaderOptions
from adapters.kafka_clients import durable_producer
from adapters.settings import CommonSettings, KafkaSettings
from domain.pace import Window
from tests.conftest import scaled, unique
from tests.waiting import eventually

TOPIC = "log"


class Handler:
    async def handle(self, batch: Batch) -> None:
        return None

    async def on_assigned(self, partitions: list[int]) -> None:
        pass

    async def on_revoked(self, partitions: list[int]) -> None:
        pass

    def commit_floor(self) -> Mapping[int, int]:
        return {}


class StalledConsumer:
    """Commits fail as a stalled broker makes them fail, then work."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.commits.append(offsets)


def metrics(registry: CollectorRegistry) -> ReaderMetrics:
    return ReaderMetrics(
        Counter("dead_letters", "", ["consumer", "reason"], registry=registry),
        Counter("commits", "", registry=registry),
        Counter("commit_failures", "", registry=registry),
        Counter("fetch_errors", "", registry=registry),
    )


async def test_a_commit_that_times_out_or_fails_is_retried_by_the_next_one() -> None:
    kafka = KafkaSettings(events_topic=TOPIC, request_timeout_s=0.2)
    registry = CollectorRegistry()
    options = ReaderOptions(name="t", group_id="g", client_id="c")
    reader = GroupReader(kafka, options, Handler(), metrics(registry))
    real = reader.consumer
    stalled = StalledConsumer(TimeoutError(), KafkaConnectionError())
    reader.consumer = stalled
    reader.ledger.assign([0])
    reader.ledger.landed(reader.ledger.take({0: (0, 41)}))
    assert await reader.commit() is False
    assert await reader.commit() is False
    assert registry.get_sample_value("commit_failures_total") == 2
    assert await reader.commit() is True
    assert stalled.commits == [{TopicPartition(TOPIC, 0): 42}]
    assert await reader.commit() is True  # nothing new: no request
    assert len(stalled.commits) == 1
    assert reader.failure is None
    await reader.dead_letters.stop()  # never started; closes its clients
    await real.stop()


class Recorder(Handler):
    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def handle(self, batch: Batch) -> None:
        self.values.extend(record.value for record in batch.records)


@contextlib.asynccontextmanager
async def reading(
    settings: CommonSettings, **window: Any
) -> AsyncIterator[tuple[GroupReader, Recorder, AIOKafkaProducer]]:
    """A reader with the router's window (16 KiB or 5 ms) unless told otherwise, started and
    settled into its idle long poll, and a producer to feed it."""
    options = ReaderOptions(
        name="t",
        group_id=unique("g"),
        client_id=unique("c"),
        **{"fetch_min_bytes": 16_384, "fetch_max_wait_ms": 5, **window},
    )
    recorder = Recorder()
    reader = GroupReader(settings.kafka, options, recorder, metrics(CollectorRegistry()))
    await reader.start()
    producer = durable_producer(settings.kafka, client_id=unique("p"))
    await producer.start()
    try:
        await eventually(lambda: reader.idle, within_s=scaled(30), what="idle after a quiet poll")
        yield reader, recorder, producer
    finally:
        await producer.stop()
        await reader.close()


@pytest.mark.integration
async def test_a_quiet_log_is_long_polled_and_the_first_record_after_it_still_arrives(
    settings: CommonSettings,
) -> None:
    # Idle, the router's window is an empty answer every 5 ms; the reader asks for any byte
    # with a 500 ms wait instead.
    async with reading(settings, idle_fetch_max_wait_ms=500) as (reader, recorder, producer):
        fetcher = reader.consumer._fetcher
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, 500)
        for n in range(50):
            await producer.send(settings.kafka.events_topic, b"%d" % n, partition=n % 4)
        await producer.flush()
        await eventually(
            lambda: len(recorder.values) == 50, within_s=scaled(10), what="all 50 records"
        )
        assert sorted(int(v) for v in recorder.values) == list(range(50))
        # Back to the batching window while records flow; idle again once they stop.
        await eventually(lambda: reader.idle, within_s=scaled(10), what="idle again")


@pytest.mark.integration
async def test_the_window_follows_the_rate_eager_then_flowing_then_busy(
    settings: CommonSettings,
) -> None:
    window = {"busy_fetch_max_wait_ms": 25, "busy_records_per_s": 600, "calm_records_per_s": 150}
    async with reading(settings, **window) as (reader, _, producer):
        fetcher = reader.consumer._fetcher
        seen: set[Window] = set()

        async def send(records_per_s: int, seconds: float) -> None:
            seen.clear()
            for _ in range(int(seconds * 20)):
                for n in range(records_per_s // 20):
                    await producer.send(settings.kafka.events_topic, b"%d" % n, partition=n % 4)
                seen.add(reader.window)
                await asyncio.sleep(0.05)

        await send(40, 3.0)  # trickling: every fetch answers on the first byte
        assert seen == {Window.IDLE}
        await send(300, 3.0)
        assert Window.FLOWING in seen and Window.BUSY not in seen
        await send(1000, 3.0)
        assert reader.window is Window.BUSY
        assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (16_384, 25)
        await eventually(lambda: reader.idle, within_s=scaled(10), what="idle once they stop")
