"""The gateway's inbox: its slot's partition of the deliveries topic, fanned out locally."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from adapters.tokens import StudentIdentity
from schemas.deliveries import DELIVERY_BATCH, ForProctors, ForStudents, WatchReady
from schemas.frames import NoticeFrame
from services.gateway.connections import Hub
from services.gateway.metrics import GatewayMetrics
from services.gateway.publisher import now_ms
from services.gateway.settings import GatewaySettings
from services.gateway.watches import Watches

log = structlog.get_logger(__name__)


class DeliveryInbox:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        settings: GatewaySettings,
        hub: Hub,
        watches: Watches,
        metrics: GatewayMetrics,
    ) -> None:
        self._consumer = consumer
        self._partition = TopicPartition(settings.kafka.deliveries_topic, settings.gateway.slot)
        self._timeout_s = settings.kafka.request_timeout_s
        self._hub = hub
        self._watches = watches
        self._metrics = metrics

    async def start_at_end(self) -> None:
        """Position at the end before the gateway accepts anyone: only new deliveries matter,
        and a watch handshake never starts before the inbox is listening."""
        self._consumer.assign([self._partition])
        async with asyncio.timeout(self._timeout_s):
            await self._consumer.seek_to_end(self._partition)
            await self._consumer.position(self._partition)

    async def run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(self._partition, timeout_ms=1000)
            except KafkaError as exc:
                # aiokafka reconnects on its own; a watch handshake waiting meanwhile times
                # out and tells its proctors, who subscribe again.
                log.warning("inbox_fetch_failed", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for record in batches.get(self._partition, ()):
                try:
                    batch = DELIVERY_BATCH.validate_json(record.value)
                except ValidationError as exc:
                    log.error("bad_delivery", offset=record.offset, error=str(exc)[:500])
                    continue
                self._dispatch(batch.items)

    def _dispatch(self, items: list[ForProctors | ForStudents | WatchReady]) -> None:
        now = now_ms()
        for_proctors: list[ForProctors] = []
        for item in items:
            self._metrics.deliveries.labels(item.kind).inc()
            match item:
                case ForProctors():
                    for_proctors.append(item)
                    self._metrics.delivery_seconds.observe(max(0, now - item.event.ts) / 1000)
                case ForStudents():
                    self._to_students(item)
                case WatchReady():
                    # Everything routed before the ready is already in hand: apply it first.
                    self._watches.on_events(for_proctors)
                    for_proctors = []
                    self._watches.on_ready(item)
        self._watches.on_events(for_proctors)

    def _to_students(self, item: ForStudents) -> None:
        if item.attempt is not None:
            targets = self._hub.by_attempt.get(item.attempt, set())
        else:
            targets = self._hub.students_by_exam.get(item.exam, set())
        notice = NoticeFrame(event=item.event)
        for conn in targets:
            if isinstance(conn.identity, StudentIdentity) and conn.identity.exam == item.exam:
                conn.send(notice)
