"""The router running in-process on the test's fresh topics, and what the tests drive it with.

- ``Kafka``: writes presence records and log events (returning each event's partition and
  offset), like the gateways and the notifier do.
- ``Deliveries``: reads every slot's deliveries partition in the background, decoding each
  record with the gateway's own model (``DELIVERY_BATCH``), so a record the gateway could
  not decode fails the test.
- ``routers``: starts ``RouterService``s (on each engine, Faust and plain aiokafka) with an
  app id of its own; ``RouterRunner``
  lets a test stop it and start another on the same consumer group (a restart).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.settings import CommonSettings
from schemas.deliveries import (
    DELIVERY_BATCH,
    DeliveryItem,
    ForProctors,
    ForStudents,
    RouterBeat,
    WatchReady,
)
from schemas.events import (
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    StudentStatus,
    encode_event,
    log_key,
)
from schemas.presence import (
    ExamWatch,
    GatewayUp,
    StudentConnection,
    StudentDisconnection,
    connection_key,
    gateway_key,
    watch_key,
)
from services.router.service import RouterService
from services.router.settings import RouterOptions, RouterSettings
from tests.conftest import scaled

# -- events --------------------------------------------------------------------------------

_counter = iter(range(1, 10**9))


def status(exam: str, attempt: str) -> StudentStatus:
    n = next(_counter)
    return StudentStatus(
        id=f"st-{n}",
        exam=exam,
        attempt=attempt,
        student=f"stu-{attempt}",
        ts=1_700_000_000_000 + n,
        client_seq=n,
        source=EventSource(kind="student", id=f"stu-{attempt}", gateway=0),
        status="active",
    )


def message(exam: str, attempt: str) -> ProctorMessage:
    n = next(_counter)
    return ProctorMessage(
        id=f"msg-{n}",
        exam=exam,
        attempt=attempt,
        ts=1_700_000_000_000 + n,
        source=EventSource(kind="proctor", id="proc-1", gateway=0),
        text="Please look at the screen",
    )


def announcement(exam: str) -> ProctorAnnouncement:
    n = next(_counter)
    return ProctorAnnouncement(
        id=f"ann-{n}",
        exam=exam,
        attempt=None,
        ts=1_700_000_000_000 + n,
        source=EventSource(kind="proctor", id="proc-1", gateway=0),
        text="Ten minutes left",
    )


@dataclass(frozen=True)
class Logged:
    event: ExamEvent
    partition: int
    offset: int


class Kafka:
    """Writes presence and log records for the test, in order, acknowledged."""

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=True
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def presence(self, key: bytes, value: bytes | None) -> None:
        async with asyncio.timeout(scaled(10)):
            await self._producer.send_and_wait(self.settings.kafka.presence_topic, value, key=key)

    async def gateway_up(self, slot: int, instance: str) -> None:
        up = GatewayUp(slot=slot, instance=instance, started_at=1, heartbeat_interval_s=5.0)
        await self.presence(gateway_key(slot), up.model_dump_json().encode())

    async def watch(self, slot: int, exam: str, request: str, instance: str = "gw-a") -> None:
        watch = ExamWatch(slot=slot, instance=instance, exam=exam, request=request)
        await self.presence(watch_key(slot, exam), watch.model_dump_json().encode())

    async def unwatch(self, slot: int, exam: str) -> None:
        await self.presence(watch_key(slot, exam), None)

    async def connect(
        self, conn: str, slot: int, exam: str, attempt: str, instance: str = "gw-a"
    ) -> None:
        record = StudentConnection(
            conn=conn,
            slot=slot,
            instance=instance,
            exam=exam,
            attempt=attempt,
            student=f"stu-{attempt}",
            opened_at=1,
            heartbeat_interval_s=5.0,
        )
        await self.presence(connection_key(conn), record.model_dump_json().encode())

    async def disconnect(
        self, conn: str, slot: int, exam: str, attempt: str, instance: str = "gw-a"
    ) -> None:
        record = StudentDisconnection(
            conn=conn,
            slot=slot,
            instance=instance,
            exam=exam,
            attempt=attempt,
            student=f"stu-{attempt}",
            closed_at=2,
            reason="client_closed",
        )
        await self.presence(connection_key(conn), record.model_dump_json().encode())

    async def raw(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Append a raw record (bypassing every schema); its partition and offset."""
        async with asyncio.timeout(scaled(10)):
            meta = await self._producer.send_and_wait(topic, value, key=key)
        return meta.partition, meta.offset

    async def log(self, *events: ExamEvent, key: bytes | None = None) -> list[Logged]:
        """Append events to the log (all sent, then awaited) and say where they landed."""
        futures = []
        for event in events:
            futures.append(
                await self._producer.send(
                    self.settings.kafka.events_topic,
                    encode_event(event),
                    key=key or log_key(event),
                )
            )
        async with asyncio.timeout(scaled(10)):
            metadata = await asyncio.gather(*futures)
        return [Logged(e, m.partition, m.offset) for e, m in zip(events, metadata, strict=True)]


# -- deliveries ----------------------------------------------------------------------------


class Deliveries:
    """Every slot's delivery items, in partition order, decoded as the gateway decodes them."""

    def __init__(self, settings: CommonSettings) -> None:
        kafka = settings.kafka
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        self._partitions = [
            TopicPartition(kafka.deliveries_topic, p) for p in range(kafka.deliveries_partitions)
        ]
        self.by_slot: dict[int, list[DeliveryItem]] = {
            p: [] for p in range(kafka.deliveries_partitions)
        }
        # Router liveness beats, kept apart: they come every second, whatever is routed.
        self.beats: dict[int, list[RouterBeat]] = {
            p: [] for p in range(kafka.deliveries_partitions)
        }
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for record in records:
                    assert record.value is not None
                    batch = DELIVERY_BATCH.validate_json(record.value)
                    assert batch.slot == tp.partition, "a record in another slot's partition"
                    for item in batch.items:
                        if isinstance(item, RouterBeat):
                            self.beats[tp.partition].append(item)
                        else:
                            self.by_slot[tp.partition].append(item)

    def proctor_items(self, slot: int, exam: str | None = None) -> list[ForProctors]:
        return [
            item
            for item in self.by_slot[slot]
            if isinstance(item, ForProctors) and (exam is None or item.exam == exam)
        ]

    def student_items(self, slot: int) -> list[ForStudents]:
        return [item for item in self.by_slot[slot] if isinstance(item, ForStudents)]

    def ready(self, slot: int, request: str) -> list[WatchReady]:
        return [
            item
            for item in self.by_slot[slot]
            if isinstance(item, WatchReady) and item.request == request
        ]

    def event_ids(self, slot: int, exam: str | None = None) -> list[str]:
        return [item.event.id for item in self.proctor_items(slot, exam)]


# -- router --------------------------------------------------------------------------------


class RouterRunner:
    """Starts and stops routers of one deployment (one Faust app id, one consumer group)."""

    def __init__(self, settings: CommonSettings, engine: str = "faust") -> None:
        self.app_id = f"router-{uuid.uuid4().hex[:10]}"
        self._settings = settings
        self._engine = engine
        self.current: RouterService | None = None

    def settings(self) -> RouterSettings:
        return RouterSettings(
            kafka=self._settings.kafka,
            router=RouterOptions(
                engine=self._engine,
                app_id=self.app_id,
                ops_port=0,
                batch_within_s=0.005,
                commit_interval_s=0.2,
                presence_catchup_timeout_s=scaled(30),
            ),
        )

    async def start(self) -> RouterService:
        assert self.current is None, "stop the running router first"
        service = RouterService(self.settings())
        try:
            async with asyncio.timeout(scaled(60)):
                await service.start()
        except BaseException:
            await service.stop()
            raise
        self.current = service
        return service

    async def stop(self) -> None:
        if self.current is not None:
            service, self.current = self.current, None
            async with asyncio.timeout(scaled(60)):
                await service.stop()


@pytest.fixture
async def kafka(settings: CommonSettings) -> AsyncIterator[Kafka]:
    client = Kafka(settings)
    await client.start()
    yield client
    await client.stop()


@pytest.fixture
async def deliveries(settings: CommonSettings) -> AsyncIterator[Deliveries]:
    reader = Deliveries(settings)
    await reader.start()
    yield reader
    await reader.stop()


@pytest.fixture(params=["faust", "aiokafka"])
async def routers(
    settings: CommonSettings, request: pytest.FixtureRequest
) -> AsyncIterator[RouterRunner]:
    """Every router test runs on both engines: the same contract, two log consumers."""
    runner = RouterRunner(settings, engine=request.param)
    yield runner
    await runner.stop()
