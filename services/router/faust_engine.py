"""The router's Faust engine (``PROCTOR_ROUTER__ENGINE=faust``): the design card's choice.

A Faust agent takes batches with ``stream.noack_take(max, within)`` and routes them through
the router service (``LogRouting``); an acker task waits for each batch's delivery records
(and dead letters) to land and only then acks its events, and Faust commits acked offsets
only (after flushing its producer). Revocation waits for in-flight batches
(``stream_wait_empty``), so no event of a revoked partition is routed after the revoked
signal. Costs about 3 times the CPU per event of the plain engine (docs/benchmarks.md,
"Router engines"): Faust hard-codes a 1,500 ms fetch wait with a 1-byte minimum, runs its
consumer in a thread of its own, and keeps per-message tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

import faust
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.sensors.monitor import Monitor

from adapters.dead_letters import DeadLetter, DeadLetterWriter
from adapters.group_reader import ReaderMetrics
from adapters.kafka_security import client_kwargs
from adapters.settings import KafkaSettings
from services.router.engine import LogRouting, RoutedBatch
from services.router.errors import RouterError, StartupFailed
from services.router.settings import RouterSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A routed batch, its dead letters and the events to ack once all of it landed."""

    batch: RoutedBatch
    letters: list[tuple[DeadLetter, Awaitable[Any]]]
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
    # ``kafka://`` names Faust's aiokafka driver whatever the security: TLS and SASL come with
    # the credentials (faust_credentials), not with the URL's scheme.
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def faust_credentials(kafka: KafkaSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """``broker_credentials`` for the Faust app, from the arguments every other client gets
    (adapters/kafka_security.py): Faust hands them to its aiokafka consumer and producer.

    Faust infers the protocol: SASL credentials with a TLS context are SASL_SSL, without one
    SASL_PLAINTEXT; SSL credentials are SSL (its context carrying any client certificate).
    """
    security = client_kwargs(kafka)
    protocol = security["security_protocol"]
    context = security.get("ssl_context")
    if protocol in ("SASL_SSL", "SASL_PLAINTEXT"):
        return faust.SASLCredentials(
            username=security["sasl_plain_username"],
            password=security["sasl_plain_password"],
            mechanism=security["sasl_mechanism"],
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


class FaustEngine:
    def __init__(
        self, settings: RouterSettings, routing: LogRouting, metrics: ReaderMetrics
    ) -> None:
        self._settings = settings
        self._opts = settings.router
        self._routing = routing
        self._metrics = metrics
        self._topic = settings.kafka.events_topic
        self._dead_letters = DeadLetterWriter(
            settings.kafka, client_id=f"{self._opts.instance}-dead-letters"
        )
        self._app: faust.App | None = None
        self._failure: BaseException | None = None

    async def start(self) -> None:
        self._app = self._build_app()
        try:
            async with asyncio.timeout(self._settings.kafka.request_timeout_s * 3):
                await self._dead_letters.start()
                await self._app.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise StartupFailed("the Faust app did not start (Kafka unreachable?)") from exc

    async def stop(self) -> None:
        app, self._app = self._app, None
        try:
            if app is not None:
                # Faust stops the agent, waits for its streams, flushes the producer, commits.
                await app.stop()
        finally:
            await self._dead_letters.stop()

    async def wait_until_stopped(self) -> None:
        app = self._app
        if app is None:
            raise RouterError("Faust engine not started")
        await app.wait_until_stopped()
        if app.crashed:
            raise RouterError(f"Faust app crashed: {app.crash_reason!r}")

    @property
    def running(self) -> bool:
        return self._app is not None and not self._app.should_stop and self._failure is None

    async def send(self, topic: str, value: bytes, partition: int) -> Awaitable[Any]:
        app = self._app
        if app is None:
            raise RouterError("Faust engine not started")
        future: Awaitable[Any] = await app.producer.send(topic, None, value, partition, None, None)
        return future

    def highwater(self, partition: int) -> int | None:
        app = self._app
        if app is None:
            return None
        highwater: int | None = app.consumer.highwater(TopicPartition(self._topic, partition))
        return highwater

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._routing.fail(exc)

    def _build_app(self) -> faust.App:
        kafka, opts = self._settings.kafka, self._opts
        app = faust.App(
            opts.app_id,
            monitor=_QuietMonitor(),
            broker=faust_broker_url(kafka.bootstrap),
            broker_credentials=faust_credentials(kafka),
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
                if self._failure is not None:
                    raise self._failure
                try:
                    batch = await self._routing.route_records([e.message for e in events], _always)
                    letters = [
                        (letter, await self._dead_letters.send(letter))
                        for letter in self._letters(batch)
                    ]
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._fail(exc)
                    raise
                await in_flight.put(_InFlight(batch, letters, events))
        finally:
            # Let what is in flight land and be acked, so the final commit covers it.
            try:
                if self._failure is None and not acker.done():
                    async with asyncio.timeout(self._opts.delivery_timeout_s):
                        await in_flight.join()
            except TimeoutError:
                log.warning("deliveries still in flight at agent stop", batches=in_flight.qsize())
            finally:
                acker.cancel()

    def _letters(self, batch: RoutedBatch) -> list[DeadLetter]:
        return [
            DeadLetter.of_record(
                record, topic=self._topic, consumer="router", reason="unroutable", error=error
            )
            for record, error in batch.unroutable
        ]

    async def _ack_batches(self, stream: Any, in_flight: asyncio.Queue[_InFlight]) -> None:
        try:
            while True:
                routed = await in_flight.get()
                # A letter that does not land fails like a delivery: nothing is acked.
                await self._routing.await_deliveries(
                    [*routed.batch.pending, *(future for _, future in routed.letters)]
                )
                for letter, _ in routed.letters:
                    self._metrics.dead_letters.labels("router", letter.reason).inc()
                    log.error(
                        "record put aside as a dead letter",
                        consumer="router",
                        partition=letter.partition,
                        offset=letter.offset,
                        error=letter.error[:300],
                    )
                for event in routed.events:
                    await stream.ack(event)
                self._routing.batch_landed(routed.batch)
                in_flight.task_done()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
            raise

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust signal: (app, assigned: set[TP])
        assigned: set[Any] = args[0]
        await self._routing.partitions_assigned(
            sorted(tp.partition for tp in assigned if tp.topic == self._topic)
        )

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust signal: (app, revoked: set[TP])
        revoked: set[Any] = args[0]
        await self._routing.partitions_revoked(
            sorted(tp.partition for tp in revoked if tp.topic == self._topic)
        )
