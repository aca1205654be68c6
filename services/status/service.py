"""The status service runtime: the exam log folded into the Redis snapshot and DynamoDB.

Two loops share the state, one asyncio task each:
- consume: getmany -> decode -> load missing states from Redis -> fold -> one MULTI to
  Redis (changed states + watermarks) -> stage the changed views for DynamoDB together
  with the batch's offsets. Redis is written every batch: gateways wait on its watermarks.
- flush: every ``flush_interval_ms`` (or sooner when many items wait) take the oldest
  coalesced views, as many as the write budget allows (``dynamo_max_writes_per_s``), write
  them (conditional, in parallel in a thread pool), then commit the log up to the oldest
  change still not in DynamoDB. A flush that is slow, or a budget that is spent, lets more
  updates coalesce: at 10,000 students the budget, not the update rate, sets the write rate
  (DynamoDB's cost is per request; boto3's per-request CPU was half the service's).

Offsets are committed only after both writes of every change they cover have landed; a store
that fails is retried with backoff (nothing committed meanwhile, readiness false). A
rebalance first drains everything (budget or not) and commits, then forgets the revoked
partitions' states.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.exceptions import RedisError

from adapters.dynamo_store import DynamoStatusStore, StatusStore, StatusStoreUnavailable
from adapters.kafka_clients import group_consumer
from adapters.kafka_topics import ensure_topics
from adapters.ops_http import start_ops_server
from adapters.snapshot_store import RedisSnapshotStore, SnapshotStore
from domain.first_attempt import FirstAttemptBuffer, Position
from domain.rate_limit import TokenBucket
from schemas.events import decode_event
from schemas.views import AttemptState, StudentView
from services.status.errors import StartupFailed
from services.status.fold import (
    AttemptKey,
    LogRecord,
    StateCache,
    ahead_of_log,
    fold,
    missing,
)
from services.status.metrics import StatusMetrics
from services.status.settings import Settings

log = structlog.get_logger("status")

_T = TypeVar("_T")
Store = Literal["redis", "dynamo", "kafka"]
_STORE_ERRORS = (RedisError, OSError, TimeoutError, StatusStoreUnavailable)


class StatusService:
    """Open with ``run()`` (until ``request_stop()``); tests run it as an asyncio task."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        *,
        dynamo: StatusStore | None = None,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.settings = settings
        self._cfg = settings.status
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = StatusMetrics(self.registry)
        self._stop = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._cache = StateCache(self._cfg.state_cache_size)
        self._buffer = FirstAttemptBuffer(memo_size=self._cfg.holder_memo_size)
        # Consumed (Redis written) but not committed; the commit also waits for DynamoDB.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        budget = self._cfg.dynamo_max_writes_per_s
        self._write_budget = (
            TokenBucket(rate=budget, burst=max(budget, 1.0), updated=time.monotonic())
            if budget > 0
            else None
        )
        self._healthy: dict[Store, bool] = {"redis": True, "dynamo": True, "kafka": True}
        self._started = False
        self._draining = False
        self._consumer: AIOKafkaConsumer | None = None
        # Injected stores (tests) are used as given; otherwise run() opens the real ones.
        self._snapshots: SnapshotStore | None = snapshots
        self._dynamo: StatusStore | None = dynamo
        self.ops_port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        self._flush_wanted.set()

    def ready(self) -> bool:
        ok = self._started and not self._stop.is_set() and all(self._healthy.values())
        self.metrics.ready.set(1 if ok else 0)
        return ok

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            await self._open(stack)
            self._started = True
            self.ready()
            log.info("status service consuming", topic=self.settings.kafka.events_topic)
            await self._serve()

    async def _open(self, stack: AsyncExitStack) -> None:
        cfg, kafka = self._cfg, self.settings.kafka
        runner = await start_ops_server(self.registry, self.ready, host=cfg.ops_host, port=cfg.ops_port)
        stack.push_async_callback(runner.cleanup)
        self.ops_port = _bound_port(runner.addresses)

        if self._snapshots is None:
            client = aioredis.Redis.from_url(self.settings.redis.url)
            stack.push_async_callback(client.aclose)
            self._snapshots = RedisSnapshotStore(
                client, self.settings.redis, topic=kafka.events_topic
            )

        if self._dynamo is None:
            store = DynamoStatusStore(
                self.settings.dynamo, workers=cfg.dynamo_workers, timeout_s=cfg.dynamo_timeout_s
            )
            stack.push_async_callback(store.close)
            await self._until_done(
                "dynamo", lambda: store.open(create_table=cfg.create_table), "open table"
            )
            self._dynamo = store

        consumer = group_consumer(
            kafka,
            group_id=cfg.group_id,
            client_id=cfg.client_id,
            fetch_max_wait_ms=cfg.poll_timeout_ms,
            fetch_min_bytes=cfg.fetch_min_bytes,
        )
        consumer.subscribe([kafka.events_topic], listener=_Rebalance(self))
        stack.push_async_callback(consumer.stop)
        try:
            await ensure_topics(kafka)
            async with asyncio.timeout(kafka.request_timeout_s * 3):
                await consumer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise StartupFailed(f"Kafka at {kafka.bootstrap}: {exc}") from exc
        self._consumer = consumer

    async def _serve(self) -> None:
        consume = asyncio.create_task(self._consume_loop(), name="status-consume")
        flush = asyncio.create_task(self._flush_loop(), name="status-flush")
        stopped = asyncio.create_task(self._stop.wait(), name="status-stop")
        tasks = (consume, flush, stopped)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.request_stop()
            # Let the last batch finish, then the last flush land and commit.
            await asyncio.wait({consume}, timeout=self._cfg.drain_timeout_s)
            self._draining = True
            self._flush_wanted.set()
            await asyncio.wait({flush}, timeout=self._cfg.drain_timeout_s)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result

    # -- consume ----------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        consumer = self._kafka
        cfg = self._cfg
        while not self._stop.is_set():
            try:
                batch = await consumer.getmany(
                    timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_batch_records
                )
            except KafkaError as exc:
                self._set_health("kafka", False)
                self.metrics.kafka_errors.inc()
                log.warning("log consumer error, retrying", error=repr(exc))
                await asyncio.sleep(cfg.retry_initial_s)
                continue
            self._set_health("kafka", True)
            if batch:
                async with self._batch_lock:
                    await self._process(batch)

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        started = time.perf_counter()
        assigned = self._kafka.assignment()
        records = [
            self._decode(tp, message)
            for tp, messages in batch.items()
            # Records fetched before a revocation we waited out belong to the next owner.
            if tp in assigned
            for message in messages
        ]
        if not records:
            return
        self.metrics.records.inc(len(records))
        resync = await self._load_missing(records)
        folded = fold(records, self._cache)
        changed = list(folded.changed.values())
        snapshots = self._snapshot_store
        await self._until_done(
            "redis", lambda: snapshots.write(changed, folded.watermarks), "snapshot write"
        )
        self.metrics.state_changes.inc(len(changed))
        # No await from here on: the staged views and the offsets they cover move together.
        for state, position in resync:
            self._stage(state.view, position)
        for key, state in folded.changed.items():
            self._stage(state.view, folded.first_change.get(key))
        topic = self.settings.kafka.events_topic
        for partition, offset in folded.watermarks.items():
            self._uncommitted[TopicPartition(topic, partition)] = offset + 1
        self._cache.trim()
        self.metrics.cached_states.set(len(self._cache))
        self.metrics.dynamo_pending.set(len(self._buffer))
        # Under a write budget an early flush could only write what the budget allows, and
        # would run the commit bookkeeping once per batch: the interval paces it instead.
        if self._write_budget is None and len(self._buffer) >= self._cfg.flush_max_items:
            self._flush_wanted.set()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _decode(self, tp: TopicPartition, message: Any) -> LogRecord:
        try:
            event = decode_event(message.value)
        except (ValidationError, ValueError, TypeError) as exc:
            self.metrics.undecodable.inc()
            log.warning(
                "undecodable log record skipped",
                topic=tp.topic,
                partition=tp.partition,
                offset=message.offset,
                error=str(exc)[:300],
            )
            return LogRecord(tp.partition, message.offset, None)
        return LogRecord(tp.partition, message.offset, event)

    async def _load_missing(
        self, records: list[LogRecord]
    ) -> list[tuple[AttemptState, Position]]:
        """Fill the cache from Redis; return the loaded states that are ahead of the log."""
        wanted = missing(records, self._cache)
        if not wanted:
            return []
        self.metrics.state_loads.inc(len(wanted))
        snapshots = self._snapshot_store
        limit = asyncio.Semaphore(self._cfg.redis_load_concurrency)

        async def load(key: AttemptKey) -> AttemptState | None:
            async with limit:
                try:
                    return await snapshots.read_attempt(*key)
                except ValidationError as exc:
                    log.error("unreadable state in Redis, rebuilt from here", attempt=key, error=str(exc))
                    return None

        async def load_all() -> list[AttemptState | None]:
            # Every read finishes before a failure is raised, so none outlives this attempt.
            results = await asyncio.gather(*(load(key) for key in wanted), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return [r for r in results if not isinstance(r, BaseException)]

        loaded = await self._until_done("redis", load_all, "state load")
        ahead: list[tuple[AttemptState, Position]] = []
        for (key, (partition, first_offset)), state in zip(wanted.items(), loaded, strict=True):
            if state is None:
                continue
            self._cache.put(key, partition, state)
            if ahead_of_log(state, first_offset):
                ahead.append((state, (partition, first_offset)))
        self.metrics.resyncs.inc(len(ahead))
        return ahead

    def _stage(self, view: StudentView, position: Position | None = None) -> None:
        self.metrics.dynamo_updates.inc()
        if not self._buffer.stage(view, position):
            self.metrics.dynamo_skipped.inc()

    # -- flush ------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        interval = self._cfg.flush_interval_ms / 1000
        last = time.monotonic()
        while True:
            wait = interval - (time.monotonic() - last)
            if wait > 0 and not self._flush_wanted.is_set():
                try:
                    async with asyncio.timeout(wait):
                        await self._flush_wanted.wait()
                except TimeoutError:
                    pass
            self._flush_wanted.clear()
            last = time.monotonic()
            await self.flush()
            if self._draining and not self._buffer and not self._uncommitted:
                return

    async def flush(self, *, everything: bool = False) -> None:
        """Write the oldest staged views the budget allows (or all), then commit what is safe."""
        async with self._flush_lock:
            if not self._buffer and not self._uncommitted:
                return
            views = self._buffer.drain(None if everything else self._budgeted(len(self._buffer)))
            started = time.perf_counter()
            try:
                await self._write_first_attempts(views)
            except BaseException:
                # Cancelled (rebalance or shutdown deadline): they go back in line, and the
                # log stays held at their positions.
                self._buffer.restage(views)
                raise
            self._buffer.landed(views)
            await self._commit(self._committable())
            self.metrics.flush_seconds.observe(time.perf_counter() - started)
            self.metrics.dynamo_pending.set(len(self._buffer))

    def _budgeted(self, waiting: int) -> int | None:
        if self._write_budget is None or self._draining:
            return None
        return self._write_budget.take_up_to(waiting, time.monotonic())

    def _committable(self) -> dict[TopicPartition, int]:
        """Consumed offsets, held back to the oldest change not yet in DynamoDB."""
        floor = self._buffer.floor()
        offsets: dict[TopicPartition, int] = {}
        for tp, consumed in list(self._uncommitted.items()):
            committed = self._committed.get(tp, -1)
            if consumed <= committed:
                del self._uncommitted[tp]  # read again after a seek: already covered
                continue
            offset = min(consumed, floor.get(tp.partition, consumed))
            if offset > committed:
                offsets[tp] = offset
        return offsets

    async def _write_first_attempts(self, views: list[StudentView]) -> None:
        store = self._first_attempt_store
        todo = views
        delay = self._cfg.retry_initial_s
        while todo:
            outcomes = await store.put_first_attempt(todo)
            failed: list[StudentView] = []
            for outcome in outcomes:
                self.metrics.dynamo_writes.labels(outcome.result).inc()
                if outcome.result == "failed":
                    failed.append(outcome.view)
                elif outcome.holder is not None:
                    self._buffer.note_holder(outcome.holder)
            if not failed:
                self._set_health("dynamo", True)
                return
            self._set_health("dynamo", False)
            self.metrics.store_retries.labels("dynamo").inc()
            log.warning(
                "DynamoDB writes failed, retrying",
                failed=len(failed),
                error=next((o.error for o in outcomes if o.error), None),
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(_jittered(delay))
            delay = min(delay * 2, self._cfg.retry_max_s)
            todo = failed

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        consumer = self._kafka
        assigned = consumer.assignment()
        for tp in [tp for tp in self._uncommitted if tp not in assigned]:
            del self._uncommitted[tp]  # its next owner reads it again from its last commit
        mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not mine:
            return
        try:
            async with asyncio.timeout(self.settings.kafka.request_timeout_s):
                await consumer.commit(mine)
        except (CommitFailedError, IllegalStateError, KafkaError, TimeoutError) as exc:
            # Uncommitted records are read again (here or by the partition's next owner);
            # every write they cause is idempotent.
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed", error=repr(exc), offsets=_printable(mine))
            return
        self.metrics.commits.inc()
        for tp, offset in mine.items():
            self._committed[tp] = offset
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]

    # -- rebalance --------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        if not revoked:
            return  # first join: nothing held yet
        async with self._batch_lock:
            try:
                async with asyncio.timeout(self._cfg.drain_timeout_s):
                    await self.flush(everything=True)
            except TimeoutError:
                # Whatever did not land is re-read by the next owner from the last commit,
                # and the Redis-ahead rule re-sends it to DynamoDB.
                log.warning("flush before rebalance timed out", partitions=_printable(revoked))
            self._cache.forget_partitions({tp.partition for tp in revoked})
            self._buffer.forget_partitions({tp.partition for tp in revoked})
            for tp in revoked:
                self._uncommitted.pop(tp, None)
                self._committed.pop(tp, None)
        log.info("partitions revoked", partitions=sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    # -- helpers ----------------------------------------------------------------------------

    async def _until_done(self, store: Store, op: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Run ``op`` until it succeeds, backing off; readiness is false while it fails."""
        delay = self._cfg.retry_initial_s
        while True:
            try:
                result = await op()
            except _STORE_ERRORS as exc:
                if not self._started and self._stop.is_set():
                    raise StartupFailed(f"{what}: {exc}") from exc
                self._set_health(store, False)
                self.metrics.store_retries.labels(store).inc()
                log.warning(f"{what} failed, retrying", store=store, error=repr(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(_jittered(delay))
                delay = min(delay * 2, self._cfg.retry_max_s)
                continue
            self._set_health(store, True)
            return result

    def _set_health(self, store: Store, ok: bool) -> None:
        if self._healthy[store] != ok:
            self._healthy[store] = ok
            self.ready()

    @property
    def _kafka(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "run() opens the consumer"
        return self._consumer

    @property
    def _snapshot_store(self) -> SnapshotStore:
        assert self._snapshots is not None, "run() opens the snapshot store"
        return self._snapshots

    @property
    def _first_attempt_store(self) -> StatusStore:
        assert self._dynamo is not None, "run() opens the first-attempt store"
        return self._dynamo


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: StatusService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._service.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._service.on_partitions_assigned(assigned)


def _jittered(delay: float) -> float:
    return delay * random.uniform(0.5, 1.0)


def _printable(offsets: Iterable[TopicPartition] | dict[TopicPartition, int]) -> list[str]:
    if isinstance(offsets, dict):
        return [f"{tp.partition}:{offset}" for tp, offset in sorted(offsets.items())]
    return [str(tp.partition) for tp in sorted(offsets)]


def _bound_port(addresses: list[Any]) -> int | None:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
