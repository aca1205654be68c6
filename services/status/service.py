"""The status service runtime: the exam log folded into the Redis snapshot and DynamoDB.

The log is read by ``adapters.group_reader.GroupReader`` (fetch, commits, rebalances, dead
letters); this service is its batch handler. Two loops share the state:
- consume (the reader's): getmany -> decode -> load missing states from Redis -> fold -> one
  MULTI to Redis (changed states + watermarks) -> stage the changed views for DynamoDB with
  the positions of their changes. Redis is written every batch: gateways wait on its
  watermarks.
- flush: every ``flush_interval_ms`` (or sooner when many items wait) take the oldest
  coalesced views, as many as the write budget allows (``dynamo_max_writes_per_s``), write
  them (conditional, several requests in flight), then commit the log up to the oldest
  change still not in DynamoDB. A flush that is slow, or a budget that is spent, lets more
  updates coalesce: at 10,000 students the budget, not the update rate, sets the write rate
  (DynamoDB's cost is per request, in money on AWS and in CPU on every box).

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

The Redis snapshot can lose its data (``FLUSHALL``, eviction, a restore). Every write names
the generation of the snapshot's marker and is refused when the marker no longer has it; an
idle service checks the marker every ``snapshot_check_interval_s``. On a loss the service
claims a new generation (every partition marked rebuilding, watermarks dropped; another
instance may have claimed it first), forgets its cached states, and seeks each of its
partitions still marked rebuilding back to the log's beginning. The re-fold writes Redis as
usual; the write that brings a partition back to where this instance had folded it before
the loss (or, for a partition it had not read yet, to the group's commit) clears that
partition's mark in the same script. The re-fold stages for DynamoDB only states whose seq
is at or past that point: the earlier ones are in DynamoDB (below the commit) or still in
the write buffer. Commits never go below the group's commit, so nothing is committed past
what was folded again. A partition revoked mid-rebuild keeps its mark; its next owner
re-folds it. See docs/architecture.md, "Status service".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Literal, TypeVar

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.exceptions import RedisError

from adapters.dead_letters import DeadLetter, read_record
from adapters.dynamo_store import DynamoStatusStore, StatusStore, StatusStoreUnavailable
from adapters.group_reader import Batch, GroupReader, ReaderFailed, ReaderOptions
from adapters.kafka_topics import PartitionsMismatch, ensure_topics
from adapters.ops_http import start_ops_server
from adapters.redis_client import redis_client
from adapters.snapshot_store import RedisSnapshotStore, SnapshotStore
from domain.backoff import Backoff
from domain.first_attempt import FirstAttemptBuffer, Position, item_key
from domain.rate_limit import TokenBucket
from schemas.events import decode_event
from schemas.views import AttemptState, StudentView
from services.status.errors import GaveUpAtStop, StartupFailed
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
        # The snapshot marker's generation this instance writes under (None: not read yet).
        self._generation: str | None = None
        # Partitions being re-folded after a loss -> the offset that completes them.
        self._rebuild_to: dict[int, int] = {}
        # Per partition, one past the last offset whose batch Redis took (this ownership).
        self._folded_to: dict[int, int] = {}
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
        runner = await start_ops_server(
            self.registry, self.ready, host=cfg.ops_host, port=cfg.ops_port
        )
        stack.push_async_callback(runner.cleanup)
        self.ops_port = _bound_port(runner.addresses)

        if self._snapshots is None:
            client = redis_client(self.settings.redis)
            stack.push_async_callback(client.aclose)
            self._snapshots = RedisSnapshotStore(
                client, self.settings.redis, topic=kafka.events_topic
            )

        if self._dynamo is None:
            store = DynamoStatusStore(
                self.settings.dynamo,
                workers=cfg.dynamo_workers,
                timeout_s=cfg.dynamo_timeout_s,
                transact_items=cfg.dynamo_transact_items,
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
        self.metrics.follow(reader, self._buffer)
        try:
            async with asyncio.timeout(kafka.request_timeout_s * 3):
                await ensure_topics(kafka)
            await reader.start()
        except (KafkaError, OSError, TimeoutError, ReaderFailed, PartitionsMismatch) as exc:
            raise StartupFailed(f"Kafka at {kafka.bootstrap}: {exc}") from exc
        self._reader = reader

    async def _serve(self) -> None:
        reader = self._log
        consume = asyncio.create_task(reader.wait(), name="status-consume")
        flush = asyncio.create_task(self._flush_loop(), name="status-flush")
        marker = asyncio.create_task(self._marker_loop(), name="status-snapshot-marker")
        stopped = asyncio.create_task(self._stop.wait(), name="status-stop")
        tasks = (consume, flush, marker, stopped)
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
            # A store down at stop: what it did not take stays uncommitted, not a failure.
            if isinstance(result, Exception) and not isinstance(result, GaveUpAtStop):
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
        if self._generation is None:  # no assignment callback yet (e.g. an injected test)
            await self._sync_marker(sorted(self._assigned()))
            records = [r for r in records if batch.keep(r.partition)]
            if not records:
                return
        self.metrics.records.inc(len(records))
        firsts: dict[int, int] = {}
        for record in records:
            firsts.setdefault(record.partition, record.offset)
        resync = await self._load_missing(records)
        folded = fold(records, self._cache)
        changed = list(folded.changed.values())
        snapshots = self._snapshot_store
        stage_from = dict(self._rebuild_to)
        rebuilt = [p for p, to in stage_from.items() if folded.watermarks.get(p, -1) + 1 >= to]
        generation = self._generation
        written = await self._until_done(
            "redis",
            lambda: snapshots.write(
                changed, folded.watermarks, generation=generation, rebuilt=rebuilt
            ),
            "snapshot write",
        )
        if not written:
            # The snapshot was lost (or re-begun by another instance): nothing of this batch
            # landed. Rebuild, and read this batch again.
            await self._sync_marker([], back_to=firsts)
            return
        self.metrics.state_changes.inc(len(changed))
        # No await from here on: the staged views and the offsets they cover move together.
        for partition, mark in folded.watermarks.items():
            self._folded_to[partition] = max(self._folded_to.get(partition, -1), mark + 1)
        for partition in rebuilt:
            self._rebuild_to.pop(partition, None)
            log.info("snapshot partition rebuilt from the log", partition=partition)
        self.metrics.snapshot_rebuilding.set(len(self._rebuild_to))
        for state, position in resync:
            self._stage(state.view, position)
        for key, state in folded.changed.items():
            first = folded.first_change.get(key)
            if first is not None and state.view.seq < stage_from.get(first[0], -1):
                continue  # re-folded history: in DynamoDB already, or still in the buffer
            self._stage(state.view, first)
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

    async def _load_missing(self, records: list[LogRecord]) -> list[tuple[AttemptState, Position]]:
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
                    return await snapshots.read_attempt(*key, partial=True)
                except ValidationError as exc:
                    log.error(
                        "unreadable state in Redis, rebuilt from here", attempt=key, error=str(exc)
                    )
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
            if ahead_of_log(state, first_offset) and state.view.seq >= self._rebuild_to.get(
                partition, -1
            ):
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
        backoff = self._backoff()
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
            if self._stop.is_set():
                raise GaveUpAtStop(f"{len(failed)} DynamoDB writes still failing")
            self.metrics.store_retries.labels("dynamo").inc()
            wait_s = backoff.next()
            log.warning(
                "DynamoDB writes failed, retrying",
                failed=len(failed),
                error=next((o.error for o in outcomes if o.error), None),
                retry_in_s=round(wait_s, 3),
            )
            await asyncio.sleep(wait_s)
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
                self.settings.kafka,
                topic,
                partition,
                view.seq,
                client_id=f"{self._cfg.client_id}-dlq",
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
            for partition in gone:
                # A partition still rebuilding keeps its mark in Redis: its next owner re-folds it.
                self._rebuild_to.pop(partition, None)
                self._folded_to.pop(partition, None)
            self.metrics.snapshot_rebuilding.set(len(self._rebuild_to))

    async def on_assigned(self, partitions: list[int]) -> None:
        # States load from Redis on first sight, unless the snapshot is being rebuilt.
        async with self._batch_lock:
            for partition in partitions:
                self._folded_to.pop(partition, None)
            await self._sync_marker(partitions)

    # -- snapshot loss and rebuild ----------------------------------------------------------

    async def _marker_loop(self) -> None:
        """Notice a lost snapshot while the log is quiet (a write notices it at once)."""
        snapshots = self._snapshot_store
        while True:
            await asyncio.sleep(self._cfg.snapshot_check_interval_s)
            if self._generation is None:
                continue
            try:
                current = await snapshots.generation()
            except _STORE_ERRORS:
                continue  # the next write retries and reports Redis's health
            if current == self._generation:
                continue
            async with self._batch_lock:
                await self._sync_marker([])

    async def _sync_marker(
        self, assigned: list[int], *, back_to: dict[int, int] | None = None
    ) -> None:
        """Read (or begin) the snapshot's marker. If its generation is not ours, the snapshot
        was lost: forget the cache and re-fold every partition of ours it marks rebuilding;
        otherwise re-fold the newly ``assigned`` ones it marks. ``back_to``: a refused
        batch's first offsets, read again where no rebuild covers them. Batch lock held."""
        snapshots = self._snapshot_store
        partitions = self._partition_count()
        now_ms = int(time.time() * 1000)
        marker = await self._until_done(
            "redis",
            lambda: snapshots.claim(uuid.uuid4().hex, partitions, now_ms),
            "snapshot marker",
        )
        lost = self._generation is not None and marker.generation != self._generation
        self._generation = marker.generation
        mine = self._assigned()
        consider = mine if lost or back_to else set(assigned) & mine
        if lost:
            self._cache.clear()
            self.metrics.cached_states.set(0)
        todo = sorted(p for p in consider if p in marker.rebuilding)
        seek_back = {p: o for p, o in (back_to or {}).items() if p in mine and p not in todo}
        if lost:
            log.warning(
                "Redis snapshot lost or re-begun; re-folding from the log",
                generation=marker.generation,
                partitions=todo,
            )
        if todo or seek_back:
            await self._rewind(todo, seek_back)

    async def _rewind(self, todo: list[int], seek_back: dict[int, int]) -> None:
        reader = self._log
        consumer, topic = reader.consumer, self.settings.kafka.events_topic
        tps = {p: TopicPartition(topic, p) for p in todo}
        begins, committed = await self._log_positions(list(tps.values()))
        done: list[int] = []
        for partition, tp in tps.items():
            begin, group = begins[tp], committed[tp]
            # Everything below ``resume`` is in DynamoDB (below the group's commit) or was
            # folded by this instance before the loss (written or still in the buffer).
            resume = self._folded_to.get(partition)
            if resume is None:
                resume = group if group is not None else begin
            resume = max(resume, self._rebuild_to.get(partition, begin))
            consumer.seek(tp, begin)
            reader.ledger.rewind(partition, begin)
            if group is not None:
                reader.ledger.committed({partition: group})  # re-read history never lowers it
            self._folded_to[partition] = begin
            if resume > begin:
                self._rebuild_to[partition] = resume
            else:
                self._rebuild_to.pop(partition, None)
                done.append(partition)
        for partition, offset in seek_back.items():
            tp = TopicPartition(topic, partition)
            consumer.seek(tp, offset)
            reader.ledger.rewind(partition, offset)
            self._folded_to[partition] = min(self._folded_to.get(partition, offset), offset)
        if any(p in self._rebuild_to for p in todo):
            self.metrics.snapshot_rebuilds.inc()
            log.warning(
                "re-folding partitions into the snapshot",
                partitions={p: self._rebuild_to[p] for p in todo if p in self._rebuild_to},
            )
        self.metrics.snapshot_rebuilding.set(len(self._rebuild_to))
        if done:
            # Nothing to re-fold (no history, or none read yet): complete at once.
            snapshots, generation = self._snapshot_store, self._generation
            await self._until_done(
                "redis",
                lambda: snapshots.write([], {}, generation=generation, rebuilt=done),
                "snapshot marker",
            )  # refused: lost again; the marker check notices within a second

    async def _log_positions(
        self, tps: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int | None]]:
        """The log's beginning and the group's commit of each partition (Kafka retried)."""
        if not tps:
            return {}, {}
        consumer, kafka = self._log.consumer, self.settings.kafka
        backoff = self._backoff()
        async with asyncio.timeout(max(self._cfg.drain_timeout_s, kafka.request_timeout_s * 4)):
            while True:
                try:
                    async with asyncio.timeout(kafka.request_timeout_s * 2):
                        begins: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
                        committed: dict[TopicPartition, int | None] = {
                            tp: await consumer.committed(tp) for tp in tps
                        }
                    return begins, committed
                except (KafkaError, TimeoutError) as exc:
                    self.metrics.store_retries.labels("kafka").inc()
                    log.warning("log positions for a rebuild failed, retrying", error=repr(exc))
                    await asyncio.sleep(backoff.next())

    def _assigned(self) -> set[int]:
        return set() if self._reader is None else set(self._reader.ledger.assigned)

    def _partition_count(self) -> int:
        found = None
        if self._reader is not None:
            found = self._reader.consumer.partitions_for_topic(self.settings.kafka.events_topic)
        return len(found) if found else self.settings.kafka.events_partitions

    # -- helpers ----------------------------------------------------------------------------

    async def _until_done(self, store: Store, op: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Run ``op`` until it succeeds, backing off; readiness is false while it fails."""
        backoff = self._backoff()
        while True:
            try:
                result = await op()
            except _STORE_ERRORS as exc:
                if not self._started and self._stop.is_set():
                    raise StartupFailed(f"{what}: {exc}") from exc
                if self._stop.is_set():
                    raise GaveUpAtStop(f"{what}: {exc}") from exc
                self._set_health(store, False)
                self.metrics.store_retries.labels(store).inc()
                wait_s = backoff.next()
                log.warning(
                    f"{what} failed, retrying",
                    store=store,
                    error=repr(exc),
                    retry_in_s=round(wait_s, 3),
                )
                await asyncio.sleep(wait_s)
                continue
            self._set_health(store, True)
            return result

    def _backoff(self) -> Backoff:
        return Backoff(self._cfg.retry_initial_s, self._cfg.retry_max_s)

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


def _bound_port(addresses: list[Any]) -> int | None:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
