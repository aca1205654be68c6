"""One aiokafka group consumer loop for every service that folds the log at least once.

The service is a ``BatchHandler``: it gets each fetched batch (``handle``), returns an
awaitable that completes once the batch's effects are durable, and hears of assignments and
revocations. Everything else is here, once:

- fetch: ``getmany`` with the service's ``fetch_min_bytes`` / ``fetch_max_wait_ms`` (the
  broker-side batching window) while records flow, and ``busy_fetch_max_wait_ms`` once they
  flow faster than ``busy_records_per_s``; once a poll comes back empty, or while records
  trickle in slower than ``calm_records_per_s``, the reader asks for any byte with a long
  wait instead (``idle_fetch_max_wait_ms``), so an idle log costs a
  fetch every half second rather than one every few milliseconds, and the first record after
  the quiet is fetched at once (``domain.pace``); a fetch error is retried with backoff
  (``healthy`` is false meanwhile), never fatal;
- offsets: ``domain.offsets.OffsetLedger`` decides what may be committed (what landed, only
  assigned partitions, never backwards, never past the handler's ``commit_floor``);
- commits every ``commit_interval_s`` (and on ``commit()``), on revocation and at close; a
  commit that fails or times out is logged, counted and retried by the next one: uncommitted
  records are read again, which at least once allows;
- rebalances: on revocation, records fetched before it are dropped (``Batch.keep``), what is
  in flight lands (bounded by ``drain_timeout_s``), the landed offsets are committed while the
  partitions are still ours, then the handler hears ``on_revoked``; a failing callback fails
  the reader (aiokafka would only log it);
- poison records: the handler calls ``Batch.dead_letter`` for a record it can never apply;
  the record goes to ``<topic>.dead-letters`` and the batch completes only once the letter
  is in Kafka, so the commit passes the record exactly when it is safely aside. A letter
  Kafka does not take is retried (the partition waits: that is an outage, not a poison);
- close: stop fetching, drain, final commit, and always stop the consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry, Counter

from adapters.dead_letters import DeadLetter, DeadLetterWriter
from adapters.kafka_clients import group_consumer
from adapters.settings import KafkaSettings
from domain.backoff import Backoff
from domain.offsets import Lease, OffsetLedger
from domain.pace import FetchWindow, Window

log = structlog.get_logger(__name__)


class ReaderFailed(Exception):
    """The reader could not start, or its handler failed (the service decides what to do)."""


class Batch:
    """Records of one fetch, across partitions, in partition order."""

    __slots__ = ("records", "lease", "letters", "_ledger", "_topic", "_consumer")

    def __init__(
        self,
        records: list[ConsumerRecord],
        lease: Lease,
        ledger: OffsetLedger,
        *,
        topic: str,
        consumer: str,
    ) -> None:
        self.records = records
        self.lease = lease
        self.letters: list[DeadLetter] = []
        self._ledger = ledger
        self._topic = topic
        self._consumer = consumer

    def keep(self, partition: int) -> bool:
        """Ask when processing a partition's records: false once it was revoked after this
        batch was fetched (its next owner processes them)."""
        return self._ledger.keep(self.lease, partition)

    def dead_letter(
        self,
        record: ConsumerRecord,
        reason: str,
        error: str,
        item: dict[str, Any] | None = None,
    ) -> None:
        """Put the record aside instead of applying it; the batch lands once it is aside."""
        self.letters.append(
            DeadLetter.of_record(
                record,
                topic=self._topic,
                consumer=self._consumer,
                reason=reason,
                error=error,
                item=item,
            )
        )


class BatchHandler(Protocol):
    async def handle(self, batch: Batch) -> Awaitable[Any] | None:
        """Process the batch; return what completes once its effects are durable (None: now)."""
        ...

    async def on_assigned(self, partitions: list[int]) -> None: ...

    async def on_revoked(self, partitions: list[int]) -> None:
        """After the revoked partitions' in-flight batches landed and were committed."""
        ...

    def commit_floor(self) -> Mapping[int, int]:
        """Per partition, the lowest offset whose effect the handler still holds back."""
        ...


@dataclass(frozen=True, slots=True)
class ReaderMetrics:
    """The consumer core's counters, named after the service (``<service>_dead_letters_total``
    and so on); ``of`` builds them on the service's registry."""

    dead_letters: Counter  # labels: consumer, reason
    commits: Counter
    commit_failures: Counter
    fetch_errors: Counter

    @classmethod
    def of(
        cls, service: str, registry: CollectorRegistry, *, fetch_errors: str = "fetch_errors"
    ) -> ReaderMetrics:
        return cls(
            dead_letters=Counter(
                f"{service}_dead_letters",
                "log records (or view items) put aside on the dead-letter topic"
                " (alert on any increase)",
                ["consumer", "reason"],
                registry=registry,
            ),
            commits=Counter(f"{service}_commits", "offset commits that landed", registry=registry),
            commit_failures=Counter(
                f"{service}_commit_failures",
                "offset commits that failed or timed out, retried by the next (never fatal)",
                registry=registry,
            ),
            fetch_errors=Counter(
                f"{service}_{fetch_errors}", "errors fetching the log, retried", registry=registry
            ),
        )


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    name: str  # the consumer's name in dead letters, logs and metric labels
    group_id: str
    client_id: str
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 100
    # While idle: fetch as soon as any byte arrives, else answer after this long.
    idle_fetch_max_wait_ms: int = 500
    # While records arrive faster than busy_records_per_s (0: never), this window instead.
    busy_fetch_max_wait_ms: int = 100
    busy_records_per_s: float = 0.0
    # While records arrive slower than this (0: never), the idle window: eager, any byte.
    calm_records_per_s: float = 0.0
    poll_timeout_ms: int = 100
    max_records: int = 2000
    commit_interval_s: float = 1.0
    batches_in_flight: int = 16
    drain_timeout_s: float = 15.0
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0


@dataclass(frozen=True, slots=True)
class _InFlight:
    batch: Batch
    done: Awaitable[Any] | None
    letters: list[tuple[DeadLetter, Awaitable[Any] | None]]


class GroupReader:
    def __init__(
        self,
        kafka: KafkaSettings,
        options: ReaderOptions,
        handler: BatchHandler,
        metrics: ReaderMetrics,
    ) -> None:
        self._kafka = kafka
        self._options = options
        self._topic = kafka.events_topic
        self._handler = handler
        self._metrics = metrics
        self.ledger = OffsetLedger()
        self.dead_letters = DeadLetterWriter(kafka, client_id=f"{options.client_id}-dead-letters")
        self.consumer: AIOKafkaConsumer = group_consumer(
            kafka,
            group_id=options.group_id,
            client_id=options.client_id,
            fetch_max_wait_ms=options.fetch_max_wait_ms,
            fetch_min_bytes=options.fetch_min_bytes,
        )
        self._in_flight: asyncio.Queue[_InFlight] = asyncio.Queue(options.batches_in_flight)
        self._pending = 0
        self._settled = asyncio.Condition()
        self._commit_lock = asyncio.Lock()
        self._fetching = asyncio.Event()
        self._stopped = asyncio.Event()
        self._fetch: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.healthy = True
        self.window = Window.FLOWING
        self._pace = FetchWindow(
            busy_records_per_s=options.busy_records_per_s,
            calm_records_per_s=options.calm_records_per_s,
        )
        self.failure: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self._kafka.request_timeout_s * 3):
                await self.dead_letters.start()
                self.consumer.subscribe([self._topic], listener=_Listener(self))
                await self.consumer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            # close() stops whatever half-started (both clients tolerate it).
            raise ReaderFailed(f"Kafka at {self._kafka.bootstrap}: {exc!r}") from exc
        self._fetching.set()
        self._fetch = asyncio.create_task(self._reporting(self._fetch_loop()), name="fetch")
        self._tasks = [
            self._fetch,
            asyncio.create_task(self._reporting(self._land_loop()), name="land"),
            asyncio.create_task(self._reporting(self._commit_loop()), name="commit"),
        ]

    async def stop_fetching(self) -> None:
        """No new batch; the one being handled finishes (bounded by ``drain_timeout_s``)."""
        self._fetching.clear()
        if self._fetch is not None and not self._fetch.done():
            await asyncio.wait({self._fetch}, timeout=self._options.drain_timeout_s)

    async def drain(self) -> bool:
        """Wait until every handed-out batch landed; False if that took too long."""
        try:
            async with asyncio.timeout(self._options.drain_timeout_s):
                async with self._settled:
                    await self._settled.wait_for(self._drained)
        except TimeoutError:
            log.warning("batches still in flight", consumer=self._options.name, n=self._pending)
            return False
        return True

    def _drained(self) -> bool:
        # A failed reader commits nothing more: what it handed out will never land.
        if self.failure is not None:
            return True
        land = self._tasks[1] if len(self._tasks) > 1 else None
        return self._pending == 0 or land is None or land.done()

    async def close(self) -> None:
        """Stop fetching, let what is in flight land, commit it, stop the clients."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.stop_fetching()
            if self.failure is None:
                await self.drain()
                await self.commit()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            self._stopped.set()
            try:
                await self.consumer.stop()
            finally:
                await self.dead_letters.stop()

    async def wait(self) -> None:
        """Return when the reader stops; raise what made it fail."""
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure

    @property
    def running(self) -> bool:
        return bool(self._tasks) and self._fetching.is_set() and self.failure is None

    def highwater(self, partition: int) -> int | None:
        highwater: int | None = self.consumer.highwater(TopicPartition(self._topic, partition))
        return highwater

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            log.error("log reader failed", consumer=self._options.name, error=repr(exc))
        self._fetching.clear()
        self._stopped.set()

    async def _reporting(self, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
            async with self._settled:
                self._settled.notify_all()  # a drain waiting for its batches: they never land
            raise

    @property
    def idle(self) -> bool:
        return self.window is Window.IDLE

    def _set_window(self, window: Window) -> None:
        """Ask for ``window`` from the next fetch on (``domain.pace`` says which).

        aiokafka reads these two settings each time it builds a fetch request but offers no
        public setter; they are plain attributes of its fetcher in the pinned 0.14.0, and a
        version without them keeps the configured window (the idle and busy savings are
        lost, nothing else).
        """
        if window is self.window:
            return
        fetcher = getattr(self.consumer, "_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
            return
        options = self._options
        if window is Window.IDLE:
            fetcher._fetch_min_bytes = 1
            fetcher._fetch_max_wait_ms = options.idle_fetch_max_wait_ms
        else:
            fetcher._fetch_min_bytes = options.fetch_min_bytes
            fetcher._fetch_max_wait_ms = (
                options.busy_fetch_max_wait_ms
                if window is Window.BUSY
                else options.fetch_max_wait_ms
            )
        self.window = window

    # -- loops ------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        options = self._options
        backoff = Backoff(options.retry_initial_s, options.retry_max_s)
        while self._fetching.is_set():
            try:
                fetched = await self.consumer.getmany(
                    timeout_ms=options.poll_timeout_ms, max_records=options.max_records
                )
            except KafkaError as exc:
                self.healthy = False
                self._metrics.fetch_errors.inc()
                log.warning("log fetch failed, retrying", consumer=options.name, error=repr(exc))
                await asyncio.sleep(backoff.next())
                continue
            self.healthy = True
            backoff.reset()
            ours = [rs for tp, rs in fetched.items() if rs and tp.topic == self._topic]
            records = [record for rs in ours for record in rs]
            self._set_window(self._pace.observe(len(records), time.monotonic()))
            if not records:
                continue
            spans = {rs[0].partition: (rs[0].offset, rs[-1].offset) for rs in ours}
            # Synchronous from getmany to here: the lease carries the revocation number of
            # the moment the records were fetched.
            lease = self.ledger.take(spans)
            batch = Batch(records, lease, self.ledger, topic=self._topic, consumer=options.name)
            self._pending += 1
            done = await self._handler.handle(batch)
            letters = [(letter, await self._queue_letter(letter)) for letter in batch.letters]
            await self._in_flight.put(_InFlight(batch, done, letters))

    async def _land_loop(self) -> None:
        while True:
            flight = await self._in_flight.get()
            if flight.done is not None:
                await flight.done
            for letter, future in flight.letters:
                await self._letter_landed(letter, future)
            self.ledger.landed(flight.batch.lease)
            async with self._settled:
                self._pending -= 1
                self._settled.notify_all()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._options.commit_interval_s)
            await self.commit()

    # -- dead letters -----------------------------------------------------------------------

    async def _queue_letter(self, letter: DeadLetter) -> Awaitable[Any] | None:
        try:
            return await self.dead_letters.send(letter)
        except (KafkaError, TimeoutError) as exc:
            log.warning("dead letter not queued, retrying", error=repr(exc))
            return None

    async def _letter_landed(self, letter: DeadLetter, future: Awaitable[Any] | None) -> None:
        backoff = Backoff(self._options.retry_initial_s, self._options.retry_max_s)
        while True:
            try:
                if future is None:
                    future = await self.dead_letters.send(letter)
                async with asyncio.timeout(self._kafka.request_timeout_s):
                    await future
                break
            except (KafkaError, TimeoutError) as exc:
                # The record stays uncommitted until its letter is aside: an outage, retried.
                log.warning("dead letter not written, retrying", error=repr(exc))
                future = None
                await asyncio.sleep(backoff.next())
        self._counted(letter)

    async def put_aside(self, letter: DeadLetter) -> None:
        """Put aside something the handler found poisonous outside a batch (a refused store
        write); returns once Kafka has it, retrying while Kafka does not take it."""
        await self._letter_landed(letter, None)

    def _counted(self, letter: DeadLetter) -> None:
        self._metrics.dead_letters.labels(self._options.name, letter.reason).inc()
        log.error(
            "record put aside as a dead letter",
            consumer=self._options.name,
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
            reason=letter.reason,
            error=letter.error[:300],
        )

    # -- commits ----------------------------------------------------------------------------

    async def commit(self) -> bool:
        """Commit what the ledger allows; False if Kafka did not take it (retried later)."""
        async with self._commit_lock:
            offsets = self.ledger.committable(self._handler.commit_floor())
            assigned = {
                tp.partition for tp in self.consumer.assignment() if tp.topic == self._topic
            }
            mine = {p: o for p, o in offsets.items() if p in assigned}
            if not mine:
                return True
            try:
                async with asyncio.timeout(self._kafka.request_timeout_s):
                    await self.consumer.commit(
                        {TopicPartition(self._topic, p): o for p, o in mine.items()}
                    )
            except (CommitFailedError, IllegalStateError, KafkaError, TimeoutError) as exc:
                # Not fatal, whatever the cause (a stalled broker, a rebalance): uncommitted
                # records are read again, here or by their next owner.
                self._metrics.commit_failures.inc()
                log.warning(
                    "offset commit failed, retrying later",
                    consumer=self._options.name,
                    error=repr(exc),
                    offsets=sorted(mine.items()),
                )
                return False
            self.ledger.committed(mine)
            self._metrics.commits.inc()
            return True

    # -- rebalances -------------------------------------------------------------------------

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        gone = sorted(tp.partition for tp in revoked if tp.topic == self._topic)
        if not gone:
            return
        self.ledger.revoking(gone)
        await self.drain()
        await self.commit()  # the consumer still holds them while this runs
        await self._handler.on_revoked(gone)
        self.ledger.revoked(gone)
        log.info("partitions revoked", consumer=self._options.name, partitions=gone)

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == self._topic)
        self.ledger.assign(mine)
        await self._handler.on_assigned(mine)
        log.info("partitions assigned", consumer=self._options.name, partitions=mine)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, reader: GroupReader) -> None:
        self._reader = reader

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        reader = self._reader
        await reader._reporting(reader._revoked(revoked))  # noqa: SLF001 - its own listener

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        reader = self._reader
        await reader._reporting(reader._assigned(assigned))  # noqa: SLF001
