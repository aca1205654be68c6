"""The router process: presence in, log in, targeted deliveries out.

Start-up, in order (``RouterService.start``):
1. the ops server (``/readyz`` answers 503 until step 3 is done);
2. the presence topic is read whole, up to the end offsets seen at this moment
   (``PresenceReader.catch_up``); no log event is routed before that, because the Faust
   app that consumes the log is only started afterwards;
3. the log engine starts: it joins the consumer group ``router.app_id`` on the event log
   and routes batches; a background task keeps applying new presence records.

Two engines consume the log with one contract (``router.engine``): ``aiokafka`` (default,
``services.router.plain_log``: a group consumer whose fetches the broker holds up to
``fetch_max_wait_ms`` to fill a batch) and ``faust`` (a Faust agent taking batches with
``stream.noack_take``). Faust's consumer thread and per-message machinery cost about 3 times
the CPU per event at a steady 1,000-2,000 events/s, which on a 2-core box running the whole
stack is the difference between meeting the latency budget and not (docs/benchmarks.md).
What follows describes the Faust engine; the plain one does the same with its own
consumer, producer and acker.

One asyncio lock orders everything that reads or changes the routing table and writes to
the deliveries topic: routing a batch and producing its records, applying presence and
producing ``WatchReady``, taking over partitions and re-announcing watches. All records
go through the Faust app's one producer, so on a slot's partition every ``WatchReady`` sits
after the deliveries of the events at or below its positions and before those above.

Positions (``domain.routing.PartitionPositions``): on each assignment the start offset of
each log partition is the group's committed offset, read from Kafka with the admin client
(Faust seeks every assigned partition to exactly that offset; with nothing committed it
is the partition's earliest offset, as ``consumer_auto_offset_reset="earliest"``); then
each routed batch records the last offset it routed per partition. On every assignment
every live watch is confirmed again with the new positions, because a gateway waits for a
``WatchReady`` covering each log partition, and the worker that owned a partition before
may have died before answering.

At least once: the agent takes batches without acking them (``noack_take``); an acker task
waits for each batch's delivery records to land and only then acks its events, and Faust
commits acked offsets only (after flushing its producer). A delivery that fails stops the
router before its events are acked. A restart routes again what was not committed;
gateways drop repeats by seq.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.sensors.monitor import Monitor
import structlog
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiohttp import web
from prometheus_client import CollectorRegistry

from adapters.ops_http import start_ops_server
from domain.routing import (
    NOBODY,
    BadEvent,
    EventHead,
    PartitionPositions,
    RoutingTable,
    WatchStarted,
)
from services.router.batches import BatchBuilder
from services.router.errors import DeliveryFailed, RouterError, StartupFailed, TopicMissing
from services.router.metrics import RouterMetrics
from services.router.plain_log import PlainLogEngine, RoutedBatch
from services.router.presence import PresenceEntry, PresenceReader
from services.router.settings import RouterSettings

log = structlog.get_logger(__name__)

_LAG_EVERY_S = 1.0
_TOPIC_GONE_AFTER_S = 10.0


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A routed batch of the Faust agent and the events to ack once it landed."""

    batch: RoutedBatch
    events: list[Any]


def _always(partition: int) -> bool:
    return True


class _QuietMonitor(Monitor):
    """Faust's default sensor, minus its per-event bookkeeping.

    It keeps statistics per message and per stream event (and asks the consumer thread for
    the highwater of every message) that nothing here reads: the router exports its own
    metrics. Skipping them saves a few percent of CPU per event.
    """

    logger = logging.getLogger("faust.quiet_monitor")  # under "faust", quiet by default

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        pass


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


class RouterService:
    def __init__(
        self, settings: RouterSettings, registry: CollectorRegistry | None = None
    ) -> None:
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
        self._app: faust.App | None = None
        self._plain: PlainLogEngine | None = None
        self._ops: web.AppRunner | None = None
        self._follow: asyncio.Task[None] | None = None
        self._caught_up = False
        self._app_started = False
        self._failed = asyncio.Event()
        self._lag_observed = 0.0
        self.failure: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._ops = await start_ops_server(
            self.registry, self.ready, host=self._opts.ops_host, port=self._opts.ops_port
        )
        await self._presence.start()
        await self._presence.catch_up(
            self._apply_presence, self._opts.presence_catchup_timeout_s
        )
        self._caught_up = True
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.kafka.bootstrap,
            client_id=f"{self._opts.instance}-admin",
            request_timeout_ms=int(self._settings.kafka.request_timeout_s * 1000),
        )
        try:
            async with asyncio.timeout(self._settings.kafka.request_timeout_s * 3):
                await self._admin.start()
        except TimeoutError as exc:
            raise StartupFailed("Kafka admin client could not connect") from exc
        if self._opts.engine == "aiokafka":
            self._plain = PlainLogEngine(self._settings, self)
            await self._plain.start()
        else:
            self._app = self._build_app()
            try:
                async with asyncio.timeout(self._settings.kafka.request_timeout_s * 3):
                    await self._app.start()
            except TimeoutError as exc:
                raise StartupFailed("the Faust app did not start (Kafka unreachable?)") from exc
        self._app_started = True
        self._follow = asyncio.create_task(self._follow_presence(), name="router-presence")
        log.info(
            "router started",
            group=self._opts.app_id,
            instance=self._opts.instance,
            engine=self._opts.engine,
        )

    async def stop(self) -> None:
        """Stop consuming, flush and commit, close; in reverse order of start."""
        if self._follow is not None:
            self._follow.cancel()
            try:
                await self._follow
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - already reported through self.failure
                pass
            self._follow = None
        if self._app is not None:
            # Faust stops the agent, waits for its streams, flushes the producer, commits.
            await self._app.stop()
            self._app = None
            self._app_started = False
        if self._plain is not None:
            await self._plain.stop()  # the same, without Faust
            self._plain = None
            self._app_started = False
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        await self._presence.stop()
        if self._ops is not None:
            await self._ops.cleanup()
            self._ops = None
        log.info("router stopped")

    async def wait(self) -> None:
        """Return when the Faust app stops on its own; raise if the router failed."""
        app, plain = self._app, self._plain
        if app is not None:
            stopped = asyncio.ensure_future(app.wait_until_stopped())
        elif plain is not None:
            stopped = asyncio.ensure_future(plain.wait_until_stopped())
        else:
            raise RouterError("router not started")
        done, pending = await asyncio.wait(
            [stopped, asyncio.ensure_future(self._failed.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in pending:
            task.cancel()
        if self.failure is not None:
            raise self.failure
        if app is not None and app.crashed:
            raise RouterError(f"Faust app crashed: {app.crash_reason!r}")

    @property
    def ops_address(self) -> tuple[str, int]:
        """Where the ops server listens (useful when the port setting is 0)."""
        if self._ops is None:
            raise RouterError("ops server not started")
        host, port = self._ops.addresses[0][:2]
        return str(host), int(port)

    def ready(self) -> bool:
        app, plain = self._app, self._plain
        running = (app is not None and not app.should_stop) or (
            plain is not None and plain.running
        )
        return self._caught_up and self._app_started and running and self.failure is None

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            log.error("router failed", error=repr(exc))
        self._failed.set()

    # -- Faust -------------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        kafka, opts = self._settings.kafka, self._opts
        app = faust.App(
            opts.app_id,
            monitor=_QuietMonitor(),
            broker=faust_broker_url(kafka.bootstrap),
            broker_client_id=opts.instance,
            autodiscover=False,
            datadir=opts.data_dir,
            store="memory://",
            # Our topics are created by adapters.kafka_topics.ensure_topics, never by Faust;
            # no leader topic and no tables, so Faust creates no topic of its own either.
            topic_allow_declare=False,
            topic_disable_leader=True,
            table_standby_replicas=0,
            web_enabled=False,
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=opts.commit_interval_s,
            stream_buffer_maxsize=opts.stream_buffer_maxsize,
            # Revocation waits for in-flight batches: no event of a revoked partition is
            # routed after the revoked signal (PartitionPositions relies on it).
            stream_wait_empty=True,
            producer_max_request_size=max(2 * opts.max_record_bytes, 1_048_576),
            producer_request_timeout=opts.delivery_timeout_s,
        )
        topic = app.topic(
            kafka.events_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(topic, name=f"{opts.app_id}.route", concurrency=1)(self._route_stream)
        # mode's SignalHandlerT cannot be satisfied under mypy (even by a plain function).
        app.on_partitions_assigned.connect(cast(Any, self._on_assigned))
        app.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        app.finalize()
        return app

    async def _route_stream(self, stream: Any) -> None:
        """The Faust agent: route each batch, hand its deliveries to the acker, go on.

        ``noack_take`` rather than ``take_events``: Faust fills no batch while the agent
        holds one, so the agent must not wait for deliveries to land; the acker task does,
        and acks the batch's events (making their offsets committable) only then.
        """
        in_flight: asyncio.Queue[_InFlight] = asyncio.Queue(self._opts.batches_in_flight)
        acker = asyncio.create_task(self._ack_batches(stream, in_flight), name="router-acker")
        try:
            async for events in stream.noack_take(
                self._opts.batch_max_events, self._opts.batch_within_s
            ):
                if self.failure is not None:
                    raise self.failure
                try:
                    batch = await self.route_records([e.message for e in events], _always)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.fail(exc)
                    raise
                await in_flight.put(_InFlight(batch, events))
        finally:
            # Let what is in flight land and be acked, so the final commit covers it.
            try:
                if self.failure is None and not acker.done():
                    async with asyncio.timeout(self._opts.delivery_timeout_s):
                        await in_flight.join()
            except TimeoutError:
                log.warning("deliveries still in flight at agent stop", batches=in_flight.qsize())
            finally:
                acker.cancel()

    async def _ack_batches(self, stream: Any, in_flight: asyncio.Queue[_InFlight]) -> None:
        try:
            while True:
                routed = await in_flight.get()
                await self.await_deliveries(routed.batch.pending)
                for event in routed.events:
                    await stream.ack(event)
                self.batch_landed(routed.batch)
                in_flight.task_done()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(exc)
            raise

    def batch_landed(self, batch: RoutedBatch) -> None:
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)

    async def route_records(
        self, records: Sequence[Any], keep: Callable[[int], bool]
    ) -> RoutedBatch:
        """Route log records (anything with partition, offset, value) of partitions ``keep``s."""
        started = time.perf_counter()
        builder = BatchBuilder(self._opts.max_record_bytes)
        last: dict[int, int] = {}
        bad = 0
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
                    bad += 1
                    log.warning(
                        "unroutable log record skipped",
                        partition=partition,
                        offset=offset,
                        error=str(exc),
                    )
                    continue
                targets = targets_of(head)
                if targets is not NOBODY:
                    builder.add_event(targets, head, partition, offset, raw)
            pending = await self._produce(builder)
            for partition, offset in last.items():
                self.positions.routed(partition, offset)
        metrics = self.metrics
        metrics.events.inc(routed)
        if bad:
            metrics.bad_events.inc(bad)
        for kind, count in builder.item_counts.items():
            if count:
                metrics.items.labels(kind).inc(count)
        metrics.batch_events.observe(routed)
        self._observe_lag(last)
        return RoutedBatch(pending, last, started)

    async def _produce(self, builder: BatchBuilder) -> list[Awaitable[Any]]:
        """Append the batch's records to the producer, in order; their futures."""
        if not builder:
            return []
        topic = self._settings.kafka.deliveries_topic
        plain, app = self._plain, self._app
        if plain is None and app is None:
            return []
        pending: list[Awaitable[Any]] = []
        size = 0
        for slot, record in builder.records():
            # Both engines' producers are aiokafka underneath; only the call differs.
            if plain is not None:
                pending.append(await plain.producer.send(topic, record, partition=slot))
            elif app is not None:
                pending.append(await app.producer.send(topic, None, record, slot, None, None))
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
        app, plain = self._app, self._plain
        now = time.monotonic()
        if (app is None and plain is None) or now - self._lag_observed < _LAG_EVERY_S:
            return
        self._lag_observed = now
        topic = self._settings.kafka.events_topic
        for partition, offset in last.items():
            try:
                if plain is not None:
                    highwater = plain.highwater(partition)
                else:
                    assert app is not None
                    highwater = app.consumer.highwater(TopicPartition(topic, partition))
            except Exception:  # noqa: BLE001 - a metric must never break routing
                continue
            if highwater is not None and highwater >= 0:
                self.metrics.lag.labels(str(partition)).set(max(highwater - offset - 1, 0))

    # -- rebalances --------------------------------------------------------------------------

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust signal: (app, assigned: set[TP])
        assigned: set[Any] = args[0]
        topic = self._settings.kafka.events_topic
        await self.partitions_assigned(sorted(tp.partition for tp in assigned if tp.topic == topic))

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

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust signal: (app, revoked: set[TP])
        revoked: set[Any] = args[0]
        topic = self._settings.kafka.events_topic
        await self.partitions_revoked([tp.partition for tp in revoked if tp.topic == topic])

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
        """First offset Faust reads per partition: committed, else earliest."""
        if not partitions:
            return {}
        admin = self._admin
        if admin is None:
            raise RouterError("admin client not started")
        topic = self._settings.kafka.events_topic
        tps = [TopicPartition(topic, p) for p in partitions]
        async with asyncio.timeout(self._settings.kafka.request_timeout_s):
            committed = await admin.list_consumer_group_offsets(
                self._opts.app_id, partitions=tps
            )
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
