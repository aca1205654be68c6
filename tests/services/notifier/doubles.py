"""Stand-ins for the notifier's neighbours: a gateway writing presence and heartbeats the way
services/gateway does (schemas/presence.py), and a watcher of the exam log."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from adapters.kafka_clients import reader
from adapters.settings import KafkaSettings
from schemas.events import (
    EventSource,
    ExamEvent,
    StudentStatus,
    decode_event,
    encode_event,
    log_key,
)
from schemas.presence import (
    CloseReason,
    GatewayHeartbeat,
    GatewayUp,
    StudentConnection,
    StudentDisconnection,
    connection_key,
    gateway_key,
    split_beats,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Student:
    """A browser tab beating every ``interval_s`` into its gateway's next batch."""

    def __init__(self, gateway: GatewayDouble, attempt: str, conn: str, interval_s: float) -> None:
        self.gateway = gateway
        self.attempt = attempt
        self.conn = conn
        self.interval_s = interval_s
        self.last_beat_ms = 0
        self.opened_at = 0
        self._task: asyncio.Task[None] | None = None

    def start_beating(self) -> None:
        self._task = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            self.last_beat_ms = now_ms()
            self.gateway.pending[self.attempt] = self.last_beat_ms
            await asyncio.sleep(self.interval_s)

    async def go_silent(self) -> None:
        """The network drops: no more beats, and no close either."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class GatewayDouble:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        kafka: KafkaSettings,
        slot: int,
        batch_period_s: float = 1.0,
    ) -> None:
        self.producer = producer
        self.kafka = kafka
        self.slot = slot
        self.instance = f"gw-{uuid.uuid4().hex[:8]}"
        self.batch_period_s = batch_period_s
        self.pending: dict[str, int] = {}
        self.students: list[Student] = []
        self.last_batch_ms = 0
        self._batches: asyncio.Task[None] | None = None

    async def _presence(self, key: bytes, record: BaseModel | None) -> None:
        value = None if record is None else record.model_dump_json().encode()
        await self.producer.send_and_wait(self.kafka.presence_topic, value, key=key)

    async def up(self) -> None:
        await self._presence(
            gateway_key(self.slot),
            GatewayUp(
                slot=self.slot,
                instance=self.instance,
                started_at=now_ms(),
                heartbeat_interval_s=1.0,
            ),
        )
        self._batches = asyncio.create_task(self._send_batches())

    async def _send_batches(self) -> None:
        while True:
            beats, self.pending = self.pending, {}
            self.last_batch_ms = now_ms()
            # As a gateway does: every partition gets its share, an empty one included.
            shares = split_beats(beats, self.kafka.heartbeats_partitions)
            for partition, students in enumerate(shares):
                record = GatewayHeartbeat(
                    slot=self.slot,
                    instance=self.instance,
                    ts=self.last_batch_ms,
                    connections=len(self.students),
                    students=students,
                )
                await self.producer.send(
                    self.kafka.heartbeats_topic,
                    record.model_dump_json().encode(),
                    key=gateway_key(self.slot),
                    partition=partition,
                )
            await asyncio.sleep(self.batch_period_s)

    async def connect(
        self, attempt: str, *, interval_s: float = 1.0, exam: str = "exam1"
    ) -> Student:
        student = Student(self, attempt, f"c-{uuid.uuid4().hex[:10]}", interval_s)
        student.opened_at = now_ms()
        await self._presence(
            connection_key(student.conn),
            StudentConnection(
                conn=student.conn,
                slot=self.slot,
                instance=self.instance,
                exam=exam,
                attempt=attempt,
                student=f"stu-{attempt}",
                opened_at=student.opened_at,
                heartbeat_interval_s=interval_s,
            ),
        )
        student.start_beating()
        self.students.append(student)
        return student

    async def close(self, student: Student, reason: CloseReason, exam: str = "exam1") -> int:
        await student.go_silent()
        self.students.remove(student)
        closed_at = now_ms()
        await self._presence(
            connection_key(student.conn),
            StudentDisconnection(
                conn=student.conn,
                slot=self.slot,
                instance=self.instance,
                exam=exam,
                attempt=student.attempt,
                student=f"stu-{student.attempt}",
                closed_at=closed_at,
                reason=reason,
            ),
        )
        await self._presence(connection_key(student.conn), None)
        return closed_at

    async def crash(self) -> None:
        """The process dies: no batches, no close records."""
        for student in self.students:
            await student.go_silent()
        if self._batches is not None:
            self._batches.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batches
            self._batches = None

    async def publish(self, event: ExamEvent) -> None:
        await self.producer.send_and_wait(
            self.kafka.events_topic, encode_event(event), key=log_key(event)
        )

    async def status(
        self, student: Student, status: Literal["active", "away"], exam: str = "exam1"
    ) -> StudentStatus:
        event = StudentStatus(
            id=f"st-{uuid.uuid4().hex[:10]}",
            exam=exam,
            attempt=student.attempt,
            student=f"stu-{student.attempt}",
            ts=now_ms(),
            source=EventSource(kind="student", id=f"stu-{student.attempt}", gateway=self.slot),
            status=status,
        )
        await self.publish(event)
        return event


class LogWatcher:
    """Reads the whole exam log and notes when each event arrived."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer = reader(kafka, client_id="test-log-watcher")
        self.seen: list[tuple[ExamEvent, int]] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(
            [
                TopicPartition(self._kafka.events_topic, p)
                for p in range(self._kafka.events_partitions)
            ]
        )
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            received = now_ms()
            if not batches:
                continue
            async with self._changed:
                for records in batches.values():
                    self.seen += [(decode_event(r.value), received) for r in records]
                self._changed.notify_all()

    def matching(self, predicate: Callable[[ExamEvent], bool]) -> list[tuple[ExamEvent, int]]:
        return [(event, at) for event, at in self.seen if predicate(event)]

    async def wait_for(
        self, predicate: Callable[[ExamEvent], bool], timeout_s: float
    ) -> tuple[ExamEvent, int]:
        """The first matching event and when it arrived; TimeoutError if none in time."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                found = self.matching(predicate)
                if found:
                    return found[0]
                await self._changed.wait()
