"""Helpers for the status service's integration tests: run it, feed the log, watch the views."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from adapters.dynamo_store import DynamoStatusStore
from adapters.kafka_clients import durable_producer
from adapters.settings import CommonSettings
from adapters.snapshot_store import RedisSnapshotStore
from domain.attempt_state import apply
from schemas.events import ExamEvent, encode_event, log_key
from schemas.views import AttemptState
from services.status.service import StatusService
from services.status.settings import Settings, StatusServiceSettings
from tests.conftest import scaled


@dataclass(frozen=True)
class Logged:
    event: ExamEvent | None
    partition: int
    offset: int


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def expected_states(logged: Iterable[Logged]) -> dict[str, AttemptState]:
    """What the reducer makes of the log, attempt by attempt, in log order per partition."""
    states: dict[str, AttemptState] = {}
    for item in sorted(logged, key=lambda i: (i.partition, i.offset)):
        event = item.event
        if event is None or event.attempt is None:
            continue
        new = apply(states.get(event.attempt), event, item.offset)
        if new is not None:
            states[event.attempt] = new
    return states


def end_offsets(logged: Iterable[Logged]) -> dict[int, int]:
    marks: dict[int, int] = {}
    for item in logged:
        marks[item.partition] = max(marks.get(item.partition, -1), item.offset)
    return marks


class Log:
    """Writes to the test's event topic and remembers where each record landed."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.records: list[Logged] = []

    async def publish(self, *events: ExamEvent) -> list[Logged]:
        futures = [
            await self._producer.send(self.topic, encode_event(e), key=log_key(e)) for e in events
        ]
        landed = [
            Logged(event, meta.partition, meta.offset)
            for event, meta in zip(events, await asyncio.gather(*futures), strict=True)
        ]
        self.records.extend(landed)
        return landed

    async def publish_raw(self, key: bytes, value: bytes) -> Logged:
        meta = await (await self._producer.send(self.topic, value, key=key))
        landed = Logged(None, meta.partition, meta.offset)
        self.records.append(landed)
        return landed


@pytest.fixture
async def log(settings: CommonSettings) -> AsyncIterator[Log]:
    producer = durable_producer(settings.kafka, client_id="status-test")
    await producer.start()
    try:
        yield Log(producer, settings.kafka.events_topic)
    finally:
        await producer.stop()


@pytest.fixture
async def snapshots(settings: CommonSettings) -> AsyncIterator[RedisSnapshotStore]:
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        yield RedisSnapshotStore(client, settings.redis, topic=settings.kafka.events_topic)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{settings.redis.key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def table(settings: CommonSettings) -> AsyncIterator[DynamoStatusStore]:
    """The test's first-attempt table, as a reader; dropped afterwards."""
    store = DynamoStatusStore(settings.dynamo, workers=2)
    await store.open()
    try:
        yield store
    finally:
        await store.delete_table()
        await store.close()


def service_settings(settings: CommonSettings, **options: Any) -> Settings:
    status = StatusServiceSettings.model_validate(
        {
            "group_id": f"status-{settings.kafka.events_topic}",
            "ops_port": 0,
            "poll_timeout_ms": 20,
            "flush_interval_ms": 20,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.3,
            "dynamo_timeout_s": 3.0,
            "drain_timeout_s": 5.0,
        }
        | options
    )
    return Settings(**settings.model_dump(), status=status)


@asynccontextmanager
async def running(
    settings: Settings, service: StatusService | None = None
) -> AsyncIterator[StatusService]:
    """The service (or one the test built) as an asyncio task, ready, stopped after."""
    service = service if service is not None else StatusService(settings)
    task = asyncio.create_task(service.run(), name="status-under-test")
    try:
        await eventually(
            lambda: _ready_or_dead(service, task), timeout=30, what="status service ready"
        )
        if task.done():
            task.result()
        yield service
    finally:
        service.request_stop()
        async with asyncio.timeout(scaled(30)):
            await task


async def _ready_or_dead(service: StatusService, task: asyncio.Task[None]) -> bool:
    return service.ready() or task.done()


def metric(service: StatusService, name: str, **labels: str) -> float:
    value = service.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def committed(settings: Settings) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.status.group_id)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


class ToggleProxy:
    """A TCP relay in front of a real server, which a test can cut and restore."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.up = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        self.up = False
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def proxy_factory() -> AsyncIterator[
    Callable[[str, int], Awaitable[tuple[ToggleProxy, int]]]
]:
    proxies: list[ToggleProxy] = []

    async def make(host: str, port: int) -> tuple[ToggleProxy, int]:
        proxy = ToggleProxy(host, port)
        proxies.append(proxy)
        return proxy, await proxy.start()

    yield make
    for proxy in proxies:
        await proxy.close()
