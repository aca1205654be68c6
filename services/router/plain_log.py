"""The log read by a plain aiokafka group consumer: the router's light engine.

Same contract as the Faust agent (see ``services.router.service``): a batch is routed under
the service's lock, its delivery futures go to an acker task, and only offsets whose
deliveries landed are committed (every ``commit_interval_s``, on revocation and on stop).
What it leaves out is Faust's machinery around that loop: a consumer in a second thread
with its own event loop, a hand-off per fetch, a task and a buffer per message. At 1,000
events/s that machinery cost 529 µs of CPU per event against 180 µs here, and 317 against 105 µs at 2,000
events/s (``bench/router_throughput.py --rate 1000|2000``): a third of a 2-core machine at
the brief's rate, against a tenth.

Rebalances: each revocation is numbered, and each fetched batch remembers the number current
when it was fetched; a batch that reaches the lock after its partition was revoked drops that
partition's records (their next owner routes them), while records fetched after a partition
came back are kept (aiokafka returns records of a new assignment before calling
``on_partitions_assigned``);
then in-flight batches land, their offsets are committed and the service forgets the
partitions' positions. On assignment the service confirms every watch with the new
positions (``WatchReady``), exactly as with Faust; a batch routed before that is fine
(``PartitionPositions`` keeps the later of the two).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from adapters.kafka_clients import group_consumer
from services.router.errors import StartupFailed
from services.router.settings import RouterSettings

log = structlog.get_logger(__name__)

_POLL_MS = 100


@dataclass(frozen=True, slots=True)
class RoutedBatch:
    """A routed batch whose delivery records may not have landed yet."""

    pending: list[Awaitable[Any]]
    last_offsets: dict[int, int]
    started: float


class LogRouting(Protocol):
    """What the engine asks of the router service."""

    async def route_records(
        self, records: Sequence[Any], keep: Callable[[int], bool]
    ) -> RoutedBatch: ...

    async def await_deliveries(self, pending: list[Awaitable[Any]]) -> None: ...

    async def partitions_assigned(self, partitions: list[int]) -> None: ...

    async def partitions_revoked(self, partitions: list[int]) -> None: ...

    def batch_landed(self, batch: RoutedBatch) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class PlainLogEngine:
    def __init__(self, settings: RouterSettings, routing: LogRouting) -> None:
        self._settings = settings
        self._opts = settings.router
        self._topic = settings.kafka.events_topic
        self._routing = routing
        # Partition -> number of the revocation that took it; records fetched before that
        # number are no longer ours to route or to commit.
        self._revocations = 0
        self._revoked_at: dict[int, int] = {}
        self._ackable: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._in_flight: asyncio.Queue[tuple[RoutedBatch, int]] = asyncio.Queue(
            self._opts.batches_in_flight
        )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        kafka = settings.kafka
        self.producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            client_id=f"{self._opts.instance}-deliveries",
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            # A slot's record for one batch may be up to max_record_bytes.
            max_batch_size=max(256 * 1024, self._opts.max_record_bytes),
            max_request_size=max(2 * self._opts.max_record_bytes, 1_048_576),
            request_timeout_ms=int(self._opts.delivery_timeout_s * 1000),
        )
        self.consumer: AIOKafkaConsumer = group_consumer(
            kafka,
            group_id=self._opts.app_id,
            client_id=f"{self._opts.instance}-log",
            fetch_max_wait_ms=self._opts.fetch_max_wait_ms,
            fetch_min_bytes=self._opts.fetch_min_bytes,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        timeout = self._settings.kafka.request_timeout_s * 3
        try:
            async with asyncio.timeout(timeout):
                await self.producer.start()
                self.consumer.subscribe([self._topic], listener=_Listener(self))
                await self.consumer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            # stop() closes whatever half-started (both clients tolerate it).
            raise StartupFailed(f"Kafka at {self._settings.kafka.bootstrap}: {exc!r}") from exc
        self._tasks = [
            asyncio.create_task(self._reporting(self._route_loop()), name="router-route"),
            asyncio.create_task(self._reporting(self._ack_loop()), name="router-acker"),
            asyncio.create_task(self._reporting(self._commit_loop()), name="router-commit"),
        ]

    async def stop(self) -> None:
        """Stop routing, let what is in flight land, commit it, close."""
        self._stopping.set()
        route = self._tasks[0] if self._tasks else None
        if route is not None:
            await asyncio.wait({route}, timeout=_POLL_MS / 1000 * 5)
        try:
            async with asyncio.timeout(self._opts.delivery_timeout_s):
                await self._drain_in_flight()
            await self._commit()
        except (TimeoutError, KafkaError) as exc:
            log.warning("final commit skipped", error=repr(exc))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        # Both clients stop cleanly whether or not they started (closed once).
        await self.consumer.stop()
        await self.producer.stop()  # flushes what is queued

    async def wait_until_stopped(self) -> None:
        await self._stopping.wait()

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stopping.is_set()

    def highwater(self, partition: int) -> int | None:
        highwater: int | None = self.consumer.highwater(TopicPartition(self._topic, partition))
        return highwater

    # -- loops ------------------------------------------------------------------------------

    async def _reporting(self, work: Awaitable[None]) -> None:
        """Any error of a loop or rebalance callback stops the router; unreported, a loop would
        die unseen and aiokafka only logs what a listener raises."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._routing.fail(exc)
            raise

    async def _route_loop(self) -> None:
        while not self._stopping.is_set():
            fetched = await self.consumer.getmany(
                timeout_ms=_POLL_MS, max_records=self._opts.batch_max_events
            )
            records = [record for batch in fetched.values() for record in batch]
            if not records:
                continue
            fetched_at = self._revocations
            batch = await self._routing.route_records(
                records, lambda partition: self._still_ours(partition, fetched_at)
            )
            await self._in_flight.put((batch, fetched_at))

    async def _ack_loop(self) -> None:
        while True:
            batch, fetched_at = await self._in_flight.get()
            try:
                await self._routing.await_deliveries(batch.pending)
                for partition, offset in batch.last_offsets.items():
                    if self._still_ours(partition, fetched_at):
                        tp = TopicPartition(self._topic, partition)
                        self._ackable[tp] = max(self._ackable.get(tp, -1), offset + 1)
                self._routing.batch_landed(batch)
            finally:
                self._in_flight.task_done()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._opts.commit_interval_s)
            try:
                await self._commit()
            except (KafkaError, TimeoutError) as exc:
                # The next round retries; a restart re-routes at most what is uncommitted.
                log.warning("offset commit failed", error=repr(exc))

    async def _drain_in_flight(self) -> None:
        if self._tasks and not self._tasks[1].done():
            await self._in_flight.join()

    def _still_ours(self, partition: int, fetched_at: int) -> bool:
        return self._revoked_at.get(partition, -1) <= fetched_at

    async def _commit(self) -> None:
        assigned = self.consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._ackable.items()
            if tp in assigned and offset > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        try:
            async with asyncio.timeout(self._settings.kafka.request_timeout_s):
                await self.consumer.commit(offsets)
        except CommitFailedError:
            log.warning("commit refused: partitions moved", partitions=len(offsets))
            return
        for tp, offset in offsets.items():
            # A slow retry must not move the commit back below a newer one.
            self._committed[tp] = max(self._committed.get(tp, -1), offset)

    # -- rebalances -------------------------------------------------------------------------

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        gone = sorted(tp.partition for tp in revoked if tp.topic == self._topic)
        if not gone:
            return
        # No batch fetched before this may route them from here on; what was routed lands and
        # is committed (the consumer still holds them while this runs).
        self._revocations += 1
        for partition in gone:
            self._revoked_at[partition] = self._revocations
        try:
            async with asyncio.timeout(self._opts.delivery_timeout_s):
                await self._drain_in_flight()
                await self._commit()
        except (TimeoutError, KafkaError) as exc:
            # Their next owner routes again from the last commit; gateways drop repeats by seq.
            log.warning("commit before revocation failed", error=repr(exc))
        for partition in gone:
            tp = TopicPartition(self._topic, partition)
            self._ackable.pop(tp, None)
            self._committed.pop(tp, None)
        await self._routing.partitions_revoked(gone)

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == self._topic)
        for partition in mine:
            # Whatever we knew of them is older than the group's committed offset now.
            tp = TopicPartition(self._topic, partition)
            self._ackable.pop(tp, None)
            self._committed.pop(tp, None)
        await self._routing.partitions_assigned(mine)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: PlainLogEngine) -> None:
        self._engine = engine

    # A failing callback must stop the router: a WatchReady that never lands would leave
    # gateways waiting for ever.
    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        engine = self._engine
        await engine._reporting(engine._revoked(revoked))  # noqa: SLF001 - its own listener

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        engine = self._engine
        await engine._reporting(engine._assigned(assigned))  # noqa: SLF001
