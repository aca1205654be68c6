"""Everything the gateway writes to Kafka: log events, presence records, heartbeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from schemas.events import ExamEvent, encode_event, log_key
from schemas.presence import GatewayHeartbeat, gateway_key, split_beats
from services.gateway.errors import Unavailable
from services.gateway.limits import LogHealth
from services.gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)


class RecentPublishes:
    """This gateway's publishes by (id scope, event id): still in flight, or landed lately.

    A frame answered ``unavailable`` stays queued in the producer and usually lands once the
    log recovers; the client meanwhile resends it unchanged. Publishing the resend again would
    write the event twice (the views drop the copy, the log keeps it), so a resend of a frame
    this gateway is still publishing waits on that publish, and one that already landed is
    acknowledged at once. Only identical resends (the id guard said so) are matched.

    A publish that failed did not land: ``get`` treats it as unknown, so the resend publishes
    again. Checking that at lookup rather than in a done-callback keeps ``track``, which runs
    for every frame, to a dict insert.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: dict[tuple[str, str], asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str]) -> asyncio.Future[None] | None:
        done = self._entries.get(key)
        if done is None or not done.done():
            return done
        if done.cancelled() or done.exception() is not None:
            del self._entries[key]
            return None
        return done

    def track(self, key: tuple[str, str], done: asyncio.Future[None]) -> None:
        entries = self._entries
        # Re-inserting moves a key to the end: dicts keep insertion order, oldest first.
        entries.pop(key, None)
        entries[key] = done
        if len(entries) > self._capacity:
            del entries[next(iter(entries))]


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, settings: GatewaySettings) -> None:
        self._producer = producer
        self._kafka = settings.kafka
        self._gateway = settings.gateway
        self._beats: dict[str, int] = {}
        self.connections = 0
        self.health = LogHealth(probe_every_s=settings.gateway.publish_deadline_s)
        self.recent = RecentPublishes(settings.gateway.recent_publishes)
        self._loop = asyncio.get_running_loop()  # a getpid() per lookup on Python 3.11

    async def publish(self, events: Sequence[ExamEvent]) -> asyncio.Future[None]:
        """Queue the events for the log; the returned future resolves once Kafka has all.

        Awaiting this only waits for room in the producer's buffer, not for the broker,
        so a connection's frames are pipelined and stay in order on their partition. The
        caller bounds the wait (its publish deadline): a full buffer blocks here.
        """
        futures = []
        try:
            for event in events:
                futures.append(
                    await self._producer.send(
                        self._kafka.events_topic, encode_event(event), key=log_key(event)
                    )
                )
        except KafkaError as exc:
            raise Unavailable(f"the event log did not take the event: {exc!r}") from exc
        done: asyncio.Future[None] = self._loop.create_future()
        # A frame is one event but for legacy frames: no gather for the usual case.
        sent: asyncio.Future[Any] = futures[0] if len(futures) == 1 else asyncio.gather(*futures)

        def _resolve(result: asyncio.Future[Any]) -> None:
            if done.done():
                return
            if result.cancelled():
                done.set_exception(Unavailable("publish cancelled"))
            elif (exc := result.exception()) is not None:
                done.set_exception(Unavailable(f"Kafka refused the event: {exc}"))
            else:
                done.set_result(None)

        sent.add_done_callback(_resolve)
        return done

    async def presence(self, key: bytes, record: BaseModel | None) -> None:
        """Write a presence record (None: a tombstone) and wait until Kafka has it."""
        value = None if record is None else record.model_dump_json().encode()
        try:
            async with asyncio.timeout(self._gateway.produce_timeout_s):
                await self._producer.send_and_wait(self._kafka.presence_topic, value, key=key)
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable(f"presence write failed: {exc!r}") from exc

    def heartbeat(self, attempt: str) -> None:
        self._beats[attempt] = now_ms()

    async def run_heartbeats(self) -> None:
        """One record per interval to each heartbeat partition: this gateway is alive, and
        these students of the partition beat (each partition's notifier judges its own)."""
        partitions = self._kafka.heartbeats_partitions
        key = gateway_key(self._gateway.slot)
        while True:
            beats, self._beats = self._beats, {}
            shares = split_beats(beats, partitions)
            ts = now_ms()
            try:
                async with asyncio.timeout(self._gateway.produce_timeout_s):
                    for partition, students in enumerate(shares):
                        record = GatewayHeartbeat(
                            slot=self._gateway.slot,
                            instance=self._gateway.instance,
                            ts=ts,
                            connections=self.connections,
                            students=students,
                        )
                        await self._producer.send(
                            self._kafka.heartbeats_topic,
                            record.model_dump_json().encode(),
                            key=key,
                            partition=partition,
                        )
            except (TimeoutError, KafkaError) as exc:
                # Keep the beats for the next record (a partition that got them twice takes
                # the newest); the notifier allows for a late batch.
                log.warning("heartbeat_not_sent", students=len(beats), error=repr(exc))
                beats.update(self._beats)
                self._beats = beats
            await asyncio.sleep(self._gateway.presence_interval_s)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
