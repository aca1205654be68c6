"""The gateway's inbox: its slot's partition of the deliveries topic, fanned out locally."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from adapters.tokens import StudentIdentity
from schemas.deliveries import (
    DELIVERY_BATCH,
    DeliveryItem,
    ForProctors,
    ForStudents,
    RouterBeat,
    WatchReady,
)
from schemas.frames import NoticeFrame, ViewStatusFrame
from services.gateway.connections import Connection, Hub
from services.gateway.metrics import GatewayMetrics
from services.gateway.publisher import now_ms
from services.gateway.settings import GatewaySettings
from services.gateway.view_health import ViewHealth
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
        self._health = ViewHealth(
            settings.kafka.events_partitions,
            stale_after_ms=round(settings.gateway.view_stale_after_s * 1000),
        )
        self._told_stale: set[Connection] = set()

    async def start_at_end(self) -> None:
        """Position at the end before the gateway accepts anyone: only new deliveries matter,
        and a watch handshake never starts before the inbox is listening."""
        self._consumer.assign([self._partition])
        async with asyncio.timeout(self._timeout_s):
            await self._consumer.seek_to_end(self._partition)
            await self._consumer.position(self._partition)

    async def run(self) -> None:
        while True:
            self._check_view_health()
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

    def _check_view_health(self) -> None:
        """Tell watching proctors when their view turns stale or live (at most every second)."""
        watchers = {conn for conns in self._hub.watchers.values() for conn in conns}
        changed = self._health.check(now_ms(), watching=bool(watchers))
        if changed is not None:
            self._metrics.view_stale.set(0 if changed.live else 1)
            if changed.live:
                log.info("view_live")
            else:
                log.warning("view_stale", partitions=changed.stale_partitions)
            self._told_stale.clear()
            if changed.live:
                self._send_all(watchers, changed)
                return
        status = self._health.status
        if status is not None:
            # Proctors who started watching while stale hear it too.
            self._send_all(watchers - self._told_stale, status)
            self._told_stale = watchers

    @staticmethod
    def _send_all(conns: set[Connection], frame: ViewStatusFrame) -> None:
        for conn in conns:
            conn.send(frame)

    def _dispatch(self, items: list[DeliveryItem]) -> None:
        now = now_ms()
        for_proctors: list[ForProctors] = []
        for item in items:
            self._metrics.delivery_item(item.kind).inc()
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
                case RouterBeat():
                    self._health.on_beat(item.partitions, now)
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
