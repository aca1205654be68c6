"""The router process: presence in, log in, targeted deliveries out.

Start-up, in order (``RouterService.start``):
1. the ops server (``/readyz`` answers 503 until step 3 is done);
2. the presence topic is read whole, up to the end offsets seen at this moment
   (``PresenceReader.catch_up``); no log event is routed before that, because the log
   engine is only started afterwards;
3. the log engine starts: it joins the consumer group ``router.app_id`` on the event log
   and routes batches; a background task keeps applying new presence records.

Two engines consume the log with one contract (``router.engine``, chosen in
``services.router.engine.make_engine``; this module has no engine branches): ``aiokafka``
(default, ``services.router.plain_log``: the shared group reader) and ``faust``
(``services.router.faust_engine``). Each hands batches to ``route_records``, waits for
their deliveries with ``await_deliveries`` and reports rebalances; records routing cannot
read (``BadEvent``) go back to the engine, which puts them aside as dead letters.

One asyncio lock orders everything that reads or changes the routing table and writes to
the deliveries topic: routing a batch and producing its records, applying presence and
producing ``WatchReady``, taking over partitions and re-announcing watches. All records
go through the engine's one producer, so on a slot's partition every ``WatchReady`` sits
after the deliveries of the events at or below its positions and before those above.

Positions (``domain.routing.PartitionPositions``): on each assignment the start offset of
each log partition is the group's committed offset, read from Kafka with the admin client
(both engines seek every assigned partition to exactly that offset; with nothing committed
it is the partition's earliest offset, as ``auto_offset_reset="earliest"``); then
each routed batch records the last offset it routed per partition. On every assignment
every live watch is confirmed again with the new positions, because a gateway waits for a
``WatchReady`` covering each log partition, and the worker that owned a partition before
may have died before answering.

At least once: only offsets whose deliveries landed are committed; a delivery that fails
stops the router first. A restart routes again what was not committed; gateways drop
repeats by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from adapters.kafka_security import client_kwargs
from adapters.kafka_topics import PartitionsMismatch, verify_partitions
from adapters.ops_http import start_ops_server
from domain.backoff import Backoff
from domain.routing import (
    NOBODY,
    BadEvent,
    EventHead,
    PartitionPositions,
    RoutingTable,
    WatchStarted,
)
from schemas.deliveries import DeliveryBatch, RouterBeat
from services.router.batches import BatchBuilder
from services.router.engine import LogEngine, RoutedBatch, make_engine
from services.router.errors import DeliveryFailed, RouterError, StartupFailed, TopicMissing
from services.router.metrics import RouterMetrics
from services.router.presence import PresenceEntry, PresenceReader
from services.router.settings import RouterSettings

log = structlog.get_logger(__name__)

_LAG_EVERY_S = 1.0
_TOPIC_GONE_AFTER_S = 10.0


class RouterService:
    def __init__(self, settings: RouterSettings, registry: CollectorRegistry | None = None) -> None:
        self._settings = settings
        self._opts = settings.router
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RouterMetrics(self.registry)
        self.table = RoutingTable()
        self.positions = PartitionPositions()
        self._lock = asyncio.Lock()
        self._presence = PresenceReader(
            settings.kafka, client_id=f"{self._opts.instance}-presence", metrics=self.metrics
        )
        self._admin: AIOKafkaAdminClient | None = None
        self._engine: LogEngine | None = None
        self._ops: web.AppRunner | None = None
        self._follow: asyncio.Task[None] | None = None
        self._beats: asyncio.Task[None] | None = None
        self._caught_up = False
        self._engine_started = False
        self._failed = asyncio.Event()
        self._lag_observed = 0.0
        self.failure: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._ops = await start_ops_server(
            self.registry, self.ready, host=self._opts.ops_host, port=self._opts.ops_port
        )
        await self._presence.start()
        await self._presence.catch_up(self._apply_presence, self._opts.presence_catchup_timeout_s)
        self._caught_up = True
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.kafka.bootstrap,
            **client_kwargs(self._settings.kafka),
            client_id=f"{self._opts.instance}-admin",
            request_timeout_ms=int(self._settings.kafka.request_timeout_s * 1000),
        )
        try:
            async with asyncio.timeout(self._settings.kafka.request_timeout_s * 3):
                await self._admin.start()
                await verify_partitions(self._settings.kafka)
        except TimeoutError as exc:
            raise StartupFailed("Kafka admin client could not connect") from exc
        except PartitionsMismatch as exc:
            raise StartupFailed(str(exc)) from exc
        self._engine = make_engine(self._settings, self, self.metrics.reader())
        await self._engine.start()
        self._engine_started = True
        self._follow = asyncio.create_task(self._follow_presence(), name="router-presence")
        self._beats = asyncio.create_task(self._beat(), name="router-beats")
        log.info(
            "router started",
            group=self._opts.app_id,
            instance=self._opts.instance,
            engine=self._opts.engine,
        )

    async def stop(self) -> None:
        """Stop consuming, flush and commit, close; in reverse order of start."""
        if self._beats is not None:
            self._beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beats
            self._beats = None
        if self._follow is not None:
            self._follow.cancel()
            try:
                await self._follow
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - already reported through self.failure
                pass
            self._follow = None
        if self._engine is not None:
            # Stops consuming, lets in-flight deliveries land, commits, closes its clients.
            await self._engine.stop()
            self._engine = None
            self._engine_started = False
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        await self._presence.stop()
        if self._ops is not None:
            await self._ops.cleanup()
            self._ops = None
        log.info("router stopped")

    async def wait(self) -> None:
        """Return when the engine stops on its own; raise if the router failed."""
        engine = self._engine
        if engine is None:
            raise RouterError("router not started")
        stopped = asyncio.ensure_future(engine.wait_until_stopped())
        failed = asyncio.ensure_future(self._failed.wait())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        if self.failure is not None:
            stopped.cancel()
            raise self.failure
        if stopped.done():
            stopped.result()

    @property
    def ops_address(self) -> tuple[str, int]:
        """Where the ops server listens (useful when the port setting is 0)."""
        if self._ops is None:
            raise RouterError("ops server not started")
        host, port = self._ops.addresses[0][:2]
        return str(host), int(port)

    def ready(self) -> bool:
        engine = self._engine
        running = engine is not None and engine.running
        return self._caught_up and self._engine_started and running and self.failure is None

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            log.error("router failed", error=repr(exc))
        self._failed.set()

    # -- routing (called by the engine) -----------------------------------------------------

    def batch_landed(self, batch: RoutedBatch) -> None:
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)

    async def route_records(
        self, records: Sequence[Any], keep: Callable[[int], bool]
    ) -> RoutedBatch:
        """Route log records (anything with partition, offset, value) of partitions ``keep``s."""
        started = time.perf_counter()
        builder = BatchBuilder(self._opts.max_record_bytes)
        last: dict[int, int] = {}
        unroutable: list[tuple[Any, str]] = []
        routed = 0
        async with self._lock:
            targets_of = self.table.targets
            for message in records:
                partition, offset, raw = message.partition, message.offset, message.value
                if not keep(partition):
                    continue  # revoked while this batch waited for the lock
                routed += 1
                last[partition] = offset
                try:
                    head = EventHead.parse(raw)
                except BadEvent as exc:
                    unroutable.append((message, str(exc)))  # the engine puts it aside
                    continue
                targets = targets_of(head)
                if targets is not NOBODY:
                    builder.add_event(targets, head, partition, offset, raw)
            pending = await self._produce(builder)
            for partition, offset in last.items():
                self.positions.routed(partition, offset)
        metrics = self.metrics
        metrics.events.inc(routed)
        if unroutable:
            metrics.bad_events.inc(len(unroutable))
        for kind, count in builder.item_counts.items():
            if count:
                metrics.items.labels(kind).inc(count)
        metrics.batch_events.observe(routed)
        self._observe_lag(last)
        return RoutedBatch(pending, last, started, unroutable)

    async def _produce(self, builder: BatchBuilder) -> list[Awaitable[Any]]:
        """Append the batch's records to the producer, in order; their futures."""
        if not builder:
            return []
        topic = self._settings.kafka.deliveries_topic
        engine = self._engine
        if engine is None:
            return []
        pending: list[Awaitable[Any]] = []
        size = 0
        for slot, record in builder.records():
            pending.append(await engine.send(topic, record, slot))
            size += len(record)
        self.metrics.records.inc(len(pending))
        self.metrics.record_bytes.inc(size)
        return pending

    async def await_deliveries(self, pending: list[Awaitable[Any]]) -> None:
        if not pending:
            return
        try:
            async with asyncio.timeout(self._opts.delivery_timeout_s):
                await asyncio.gather(*pending)
        except TimeoutError as exc:
            raise DeliveryFailed(
                f"{len(pending)} delivery records not acknowledged within "
                f"{self._opts.delivery_timeout_s}s"
            ) from exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise DeliveryFailed(f"delivery record failed: {exc!r}") from exc

    def _observe_lag(self, last: dict[int, int]) -> None:
        engine = self._engine
        now = time.monotonic()
        if engine is None or now - self._lag_observed < _LAG_EVERY_S:
            return
        self._lag_observed = now
        for partition, offset in last.items():
            try:
                highwater = engine.highwater(partition)
            except Exception:  # noqa: BLE001 - a metric must never break routing
                continue
            if highwater is not None and highwater >= 0:
                self.metrics.lag.labels(str(partition)).set(max(highwater - offset - 1, 0))

    # -- liveness towards the gateways ------------------------------------------------------

    async def _beat(self) -> None:
        """Tell every slot with watchers which partitions this router routes, every second.

        Best effort and never awaited: a beat that does not land is exactly what the gateway
        should notice. Under the lock, so a beat follows the deliveries routed before it.
        """
        topic = self._settings.kafka.deliveries_topic
        while True:
            await asyncio.sleep(self._opts.beat_interval_s)
            engine = self._engine
            if engine is None:
                continue
            async with self._lock:
                owned = sorted(self.positions.owned)
                slots = sorted({watch.slot for watch in self.table.watches()})
                if not owned or not slots:
                    continue
                beat = RouterBeat(
                    router=self._opts.instance, partitions=owned, ts=time.time_ns() // 1_000_000
                )
                for slot in slots:
                    record = DeliveryBatch(slot=slot, items=[beat]).model_dump_json().encode()
                    try:
                        sent = await engine.send(topic, record, slot)
                    except Exception as exc:  # noqa: BLE001 - a beat must never stop routing
                        log.warning("router_beat_not_sent", slot=slot, error=repr(exc))
                        continue
                    asyncio.ensure_future(sent).add_done_callback(_beat_landed)
                    self.metrics.beats.inc()

    # -- rebalances --------------------------------------------------------------------------

    async def partitions_assigned(self, mine: list[int]) -> None:
        self.metrics.rebalances.inc()
        try:
            starts = await self._start_offsets(mine)
        except Exception as exc:
            self.fail(StartupFailed(f"cannot read start offsets of {mine}: {exc!r}"))
            raise
        async with self._lock:
            self.positions.assigned(starts)
            self.metrics.owned_partitions.set(len(self.positions.owned))
            builder = BatchBuilder(self._opts.max_record_bytes)
            positions = self.positions.snapshot()
            if positions:
                for started in self.table.watches():
                    builder.add_watch_ready(started.slot, started.ready(positions))
            pending = await self._produce(builder)
        self.metrics.watch_ready.inc(builder.item_counts["watch_ready"])
        log.info(
            "log partitions assigned",
            partitions=mine,
            positions=positions,
            watches_confirmed=builder.item_counts["watch_ready"],
        )
        await self.await_deliveries(pending)

    async def partitions_revoked(self, gone: list[int]) -> None:
        async with self._lock:
            self.positions.revoked(gone)
            self.metrics.owned_partitions.set(len(self.positions.owned))
            for partition in gone:
                try:
                    self.metrics.lag.remove(str(partition))
                except KeyError:
                    pass  # no batch of it was routed yet
        if gone:
            log.info("log partitions revoked", partitions=sorted(gone))

    async def _start_offsets(self, partitions: list[int]) -> dict[int, int]:
        """First offset the engine reads per partition: committed, else earliest.

        Right after a broker stall the group's coordinator answers "not available" (or
        "loading") for a while; the rebalance that the stall caused lands in that window.
        Retriable errors and timeouts are asked again with backoff for up to
        ``start_offsets_patience_s``: stopping the router there left every exam without
        deliveries (the fault suite's Kafka stalls of 30 and 90 s, docs/faults.md).
        """
        if not partitions:
            return {}
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._opts.start_offsets_patience_s
        backoff = Backoff(initial_s=0.1, maximum_s=2.0)
        while True:
            try:
                return await self._read_start_offsets(partitions)
            except (TimeoutError, KafkaError) as exc:
                retriable = isinstance(exc, TimeoutError) or exc.retriable
                wait = backoff.next()
                if not retriable or loop.time() + wait > give_up_at:
                    raise
                self.metrics.start_offsets_retries.inc()
                log.warning("start offsets not read, asking again", error=repr(exc), wait=wait)
                await asyncio.sleep(wait)

    async def _read_start_offsets(self, partitions: list[int]) -> dict[int, int]:
        admin = self._admin
        if admin is None:
            raise RouterError("admin client not started")
        topic = self._settings.kafka.events_topic
        tps = [TopicPartition(topic, p) for p in partitions]
        async with asyncio.timeout(self._settings.kafka.request_timeout_s):
            committed = await admin.list_consumer_group_offsets(self._opts.app_id, partitions=tps)
            earliest = await self._presence.consumer.beginning_offsets(tps)
        starts: dict[int, int] = {}
        for tp in tps:
            first = earliest.get(tp, 0)
            meta = committed.get(tp)
            offset = meta.offset if meta is not None else -1
            # An offset below the earliest was deleted by retention: the consumer resets
            # to the earliest, like an absent one.
            starts[tp.partition] = max(offset, first) if offset >= 0 else first
        return starts

    # -- presence ----------------------------------------------------------------------------

    def _apply_presence(self, entry: PresenceEntry) -> list[WatchStarted]:
        started = self.table.apply(entry.key, entry.record)
        self.metrics.presence_records.inc()
        watches, connections = self.table.counts()
        self.metrics.watches.set(watches)
        self.metrics.connections.set(connections)
        return started

    async def _follow_presence(self) -> None:
        missing_since: float | None = None
        try:
            while True:
                entries = await self._presence.fetch()
                if entries:
                    await self._apply_live(entries)
                # A deleted topic is not an outage to ride out: without presence the router
                # cannot route, so it stops (and its supervisor sees it) instead of spinning.
                if not self._presence.topic_missing():
                    missing_since = None
                elif missing_since is None:
                    missing_since = time.monotonic()
                elif time.monotonic() - missing_since > _TOPIC_GONE_AFTER_S:
                    topic = self._settings.kafka.presence_topic
                    raise TopicMissing(f"presence topic {topic!r} is gone")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(exc)
            raise

    async def _apply_live(self, entries: Sequence[PresenceEntry]) -> None:
        builder = BatchBuilder(self._opts.max_record_bytes)
        async with self._lock:
            positions = self.positions.snapshot()
            for entry in entries:
                for started in self._apply_presence(entry):
                    # With no partition owned yet, the next assignment confirms every watch.
                    if positions:
                        builder.add_watch_ready(started.slot, started.ready(positions))
            pending = await self._produce(builder)
        if builder:
            self.metrics.watch_ready.inc(builder.item_counts["watch_ready"])
        await self.await_deliveries(pending)


def _beat_landed(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("router_beat_lost", error=repr(future.exception()))
