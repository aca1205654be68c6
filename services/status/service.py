"""The status service runtime: the exam log folded into the Redis snapshot and DynamoDB.

The log is read by ``adapters.group_reader.GroupReader`` (fetch, commits, rebalances, dead
letters); this service is its batch handler. Two loops share the state:
- consume (the reader's): getmany -> decode -> load missing states from Redis -> fold -> one
  MULTI to Redis (changed states + watermarks) -> stage the changed views for DynamoDB with
  the positions of their changes. Redis is written every batch: gateways wait on its
  watermarks.
- flush: every ``flush_interval_ms`` (or sooner when many items wait) take the oldest
  coalesced views, as many as the write budget allows (``dynamo_max_writes_per_s``), write
  them (conditional, in parallel in a thread pool), then commit the log up to the oldest
  change still not in DynamoDB. A flush that is slow, or a budget that is spent, lets more
  updates coalesce: at 10,000 students the budget, not the update rate, sets the write rate
  (DynamoDB's cost is per request; boto3's per-request CPU was half the service's).

Offsets are committed only after both writes of every change they cover have landed: the
reader's ledger holds the commit at the handler's ``commit_floor``, the oldest change not yet
in DynamoDB. Failures are of two kinds:
- the store's (unavailable, throttled, timed out): retried with backoff, nothing committed
  past it meanwhile, readiness false;
- one record's or item's (it does not decode; DynamoDB rejects the item, e.g. "Number
  overflow" for a score of 1e308): put aside on the dead-letter topic
  (``status_dead_letters_total``), and the partition goes on; the commit passes it once the
  letter is in Kafka. A rejected item is written alone (one PutItem per item), so its
  neighbours in the flush land as usual.
A rebalance first drains everything (budget or not) and commits, then forgets the revoked
partitions' states.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
import structlog
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.exceptions import RedisError

from adapters.dead_letters import DeadLetter, read_record
from adapters.dynamo_store import DynamoStatusStore, StatusStore, StatusStoreUnavailable
from adapters.group_reader import Batch, GroupReader, ReaderFailed, ReaderOptions
from adapters.kafka_topics import ensure_topics
from adapters.ops_http import start_ops_server
from adapters.snapshot_store import RedisSnapshotStore, SnapshotStore
from domain.first_attempt import FirstAttemptBuffer, Position, item_key
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
        budget = self._cfg.dynamo_max_writes_per_s
        self._write_budget = (
            TokenBucket(rate=budget, burst=max(budget, 1.0), updated=time.monotonic())
            if budget > 0
            else None
        )
        self._healthy: dict[Store, bool] = {"redis": True, "dynamo": True, "kafka": True}
        self._started = False
        self._draining = False
        self._reader: GroupReader | None = None
        # Injected stores (tests) are used as given; otherwise run() opens the real ones.
        self._snapshots: SnapshotStore | None = snapshots
        self._dynamo: StatusStore | None = dynamo
        self.ops_port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        self._flush_wanted.set()

    def ready(self) -> bool:
        kafka_ok = self._reader is None or self._reader.healthy
        ok = self._started and not self._stop.is_set() and all(self._healthy.values()) and kafka_ok
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

        reader = GroupReader(
            kafka,
            ReaderOptions(
                name="status",
                group_id=cfg.group_id,
                client_id=cfg.client_id,
                fetch_min_bytes=cfg.fetch_min_bytes,
                fetch_max_wait_ms=cfg.poll_timeout_ms,
                poll_timeout_ms=cfg.poll_timeout_ms,
                max_records=cfg.max_batch_records,
                # Each flush commits too; this only bounds how long a quiet log waits.
                commit_interval_s=max(cfg.flush_interval_ms / 1000, 0.2),
                batches_in_flight=1,
                drain_timeout_s=cfg.drain_timeout_s,
                retry_initial_s=cfg.retry_initial_s,
                retry_max_s=cfg.retry_max_s,
            ),
            self,
            self.metrics.reader(),
        )
        stack.push_async_callback(reader.close)
        try:
            async with asyncio.timeout(kafka.request_timeout_s * 3):
                await ensure_topics(kafka)
            await reader.start()
        except (KafkaError, OSError, TimeoutError, ReaderFailed) as exc:
            raise StartupFailed(f"Kafka at {kafka.bootstrap}: {exc}") from exc
        self._reader = reader

    async def _serve(self) -> None:
        reader = self._log
        consume = asyncio.create_task(reader.wait(), name="status-consume")
        flush = asyncio.create_task(self._flush_loop(), name="status-flush")
        stopped = asyncio.create_task(self._stop.wait(), name="status-stop")
        tasks = (consume, flush, stopped)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.request_stop()
            # Let the last batch finish, then the last flush land; the reader's close (in
            # run's exit stack) makes the final commit.
            await reader.stop_fetching()
            await reader.drain()
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

    # -- consume (the reader's batch handler) -----------------------------------------------

    async def handle(self, batch: Batch) -> None:
        async with self._batch_lock:
            await self._process(batch)

    def commit_floor(self) -> dict[int, int]:
        return self._buffer.floor()

    async def _process(self, batch: Batch) -> None:
        started = time.perf_counter()
        # Records fetched before a revocation we waited out belong to the next owner.
        ours = {p for p in {r.partition for r in batch.records} if batch.keep(p)}
        records = [
            self._decode(batch, message) for message in batch.records if message.partition in ours
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
        self._cache.trim()
        self.metrics.cached_states.set(len(self._cache))
        self.metrics.dynamo_pending.set(len(self._buffer))
        # Under a write budget an early flush could only write what the budget allows, and
        # would run the commit bookkeeping once per batch: the interval paces it instead.
        if self._write_budget is None and len(self._buffer) >= self._cfg.flush_max_items:
            self._flush_wanted.set()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _decode(self, batch: Batch, message: ConsumerRecord) -> LogRecord:
        try:
            event = decode_event(message.value)
        except (ValidationError, ValueError, TypeError) as exc:
            # Put aside; it still advances the watermark (Redis has all there is of it).
            self.metrics.undecodable.inc()
            batch.dead_letter(message, "undecodable", str(exc))
            return LogRecord(message.partition, message.offset, None)
        return LogRecord(message.partition, message.offset, event)

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
            if self._draining and not self._buffer:
                return

    async def flush(self, *, everything: bool = False) -> None:
        """Write the oldest staged views the budget allows (or all), then commit what is safe."""
        async with self._flush_lock:
            if not self._buffer:
                await self._commit()
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
            await self._commit()
            self.metrics.flush_seconds.observe(time.perf_counter() - started)
            self.metrics.dynamo_pending.set(len(self._buffer))

    def _budgeted(self, waiting: int) -> int | None:
        if self._write_budget is None or self._draining:
            return None
        return self._write_budget.take_up_to(waiting, time.monotonic())

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
                elif outcome.result == "rejected":
                    await self._put_aside(outcome.view, outcome.error or "rejected")
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

    async def _commit(self) -> None:
        if self._reader is not None:  # unit tests flush without a log
            await self._reader.commit()

    async def _put_aside(self, view: StudentView, error: str) -> None:
        """DynamoDB will never take this item: a dead letter naming the log record that made
        it (the state's last applied event), carrying the item; then it no longer holds the
        commit. A restart re-reads nothing for it: the letter is the record of the loss."""
        topic = self.settings.kafka.events_topic
        partition = self._cache.partition_of((view.exam, view.attempt))
        original = None
        if partition is not None:
            original = await read_record(
                self.settings.kafka, topic, partition, view.seq, client_id=f"{self._cfg.client_id}-dlq"
            )
        key, value = original if original is not None else (view.attempt.encode(), None)
        await self._log.put_aside(
            DeadLetter.of(
                topic=topic,
                partition=-1 if partition is None else partition,
                offset=view.seq,
                key=key,
                value=value,
                consumer="status",
                reason="store_rejected",
                error=error,
                item=view.model_dump(mode="json"),
            )
        )
        log.error("DynamoDB rejected an item; put aside", item=item_key(view), error=error[:300])

    # -- rebalance --------------------------------------------------------------------------

    async def on_revoked(self, partitions: list[int]) -> None:
        gone = set(partitions)
        async with self._batch_lock:
            try:
                async with asyncio.timeout(self._cfg.drain_timeout_s):
                    await self.flush(everything=True)  # commits while they are still ours
            except TimeoutError:
                # Whatever did not land is re-read by the next owner from the last commit,
                # and the Redis-ahead rule re-sends it to DynamoDB.
                log.warning("flush before rebalance timed out", partitions=sorted(gone))
            self._cache.forget_partitions(gone)
            self._buffer.forget_partitions(gone)

    async def on_assigned(self, partitions: list[int]) -> None:
        pass  # states load from Redis on first sight

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
    def _log(self) -> GroupReader:
        assert self._reader is not None, "run() opens the log reader"
        return self._reader

    @property
    def _snapshot_store(self) -> SnapshotStore:
        assert self._snapshots is not None, "run() opens the snapshot store"
        return self._snapshots

    @property
    def _first_attempt_store(self) -> StatusStore:
        assert self._dynamo is not None, "run() opens the first-attempt store"
        return self._dynamo


def _jittered(delay: float) -> float:
    return delay * random.uniform(0.5, 1.0)


def _bound_port(addresses: list[Any]) -> int | None:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
