"""The exam log (group ``notifier``) -> alert rules -> ``alert.raised`` events.

The rules' state (who is away since when, recent away episodes, alerts already raised) lives
in memory, so on every partition assignment the rules start afresh and re-read each partition
from ``alerts_lookback_s`` back. Events below the group's committed offset only rebuild state
(their alerts were written before); from the committed offset on, alerts are raised. Offsets
are committed after the batch's alerts are in Kafka, at most every ``commit_interval_s`` (a
commit per fetched batch cost the notifier a quarter of its CPU under load), and on
revocation and stop. Time-based alerts (``away_too_long``)
wait until the log read at assignment is consumed, so an alert already in the log is seen
before it could be raised twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import ValidationError

from adapters.kafka_clients import group_consumer
from adapters.settings import KafkaSettings
from domain.alerts import AlertRules
from schemas.events import AlertRaised, decode_event, encode_event, log_key
from services.notifier.errors import StartupFailed
from services.notifier.metrics import NotifierMetrics
from services.notifier.settings import NotifierOptions
from services.notifier.writer import Writer

log = structlog.get_logger(__name__)

Clock = Callable[[], int]

# Only these event types move the alert rules; the rest (progress, answers, proctor commands)
# is most of the log and is skipped before decoding.
_RELEVANT = (b'"student.status"', b'"student.offline"', b'"student.submitted"', b'"alert.raised"')


class AlertsLoop:
    def __init__(
        self,
        kafka: KafkaSettings,
        options: NotifierOptions,
        writer: Writer,
        metrics: NotifierMetrics,
        clock: Clock,
    ) -> None:
        self._kafka = kafka
        self._options = options
        self._writer = writer
        self._metrics = metrics
        self._clock = clock
        self._rules = self._new_rules()
        self._consumer: AIOKafkaConsumer | None = None
        self._live_from: dict[TopicPartition, int] = {}
        self._catch_up_to: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}
        # Offsets whose alerts are in Kafka but not committed yet.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed_at = time.monotonic()
        self._assigned = False
        self.caught_up = False

    async def open(self) -> None:
        consumer = group_consumer(
            self._kafka,
            group_id=self._options.group_id,
            client_id=f"{self._options.instance}-log",
            fetch_max_wait_ms=round(self._options.tick_interval_s * 1000),
            fetch_min_bytes=self._options.alerts_fetch_min_bytes,
        )
        consumer.subscribe([self._kafka.events_topic], listener=_Rewind(self))
        self._consumer = consumer
        try:
            async with asyncio.timeout(self._options.startup_timeout_s):
                await consumer.start()
        except TimeoutError as exc:
            raise StartupFailed("the event log consumer did not start in time") from exc

    async def close(self) -> None:
        if self._consumer is None:
            return
        try:
            await self._commit_due(force=True)
        except (KafkaError, TimeoutError) as exc:
            # The next owner re-reads from the last commit and raises the same alert ids.
            log.warning("final_commit_failed", error=repr(exc))
        finally:
            await self._consumer.stop()
            self._consumer = None

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None, "open() first"
        tick_ms = round(self._options.tick_interval_s * 1000)
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=tick_ms)
            alerts: list[AlertRaised] = []
            for tp, records in batches.items():
                alerts += self._fold(tp, records)
            if self._assigned and not self.caught_up:
                self.caught_up = all(
                    self._next.get(tp, 0) >= end for tp, end in self._catch_up_to.items()
                )
            if self.caught_up:
                alerts += self._rules.tick(self._clock())
            await self._write(alerts)
            self._stage_commit(batches)
            await self._commit_due()

    def _fold(self, tp: TopicPartition, records: list[ConsumerRecord]) -> list[AlertRaised]:
        alerts: list[AlertRaised] = []
        live_from = self._live_from.get(tp, 0)
        for record in records:
            value = record.value or b""
            if any(marker in value for marker in _RELEVANT):
                try:
                    event = decode_event(value)
                except ValidationError:
                    self._metrics.bad_records.labels("events").inc()
                    log.warning("bad_log_event", partition=tp.partition, offset=record.offset)
                else:
                    raised = self._rules.on_event(event)
                    if record.offset >= live_from:
                        alerts += raised
        if records:
            self._next[tp] = records[-1].offset + 1
        return alerts

    async def _write(self, alerts: list[AlertRaised]) -> None:
        await self._writer.write(
            self._kafka.events_topic, [(log_key(a), encode_event(a)) for a in alerts]
        )
        for alert in alerts:
            self._metrics.alerts.labels(alert.kind).inc()
            log.info("alert_raised", attempt=alert.attempt, kind=alert.kind, detail=alert.detail)

    def _stage_commit(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batches.items():
            # Never behind the committed offset: re-read history must not move it back.
            if records and records[-1].offset + 1 > self._live_from.get(tp, 0):
                self._uncommitted[tp] = records[-1].offset + 1

    async def _commit_due(self, *, force: bool = False) -> None:
        consumer = self._consumer
        now = time.monotonic()
        if consumer is None or not self._uncommitted:
            return
        if not force and now - self._committed_at < self._options.commit_interval_s:
            return
        assigned = consumer.assignment()
        # A batch staged while a revocation ran may name partitions no longer ours.
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
        self._uncommitted = {}
        self._committed_at = now
        if not offsets:
            return
        try:
            async with asyncio.timeout(self._kafka.request_timeout_s):
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError):
            # A rebalance took the partitions; their next owner re-reads from the last commit
            # and raises the same alert ids.
            log.warning("commit_failed_rebalance", partitions=len(offsets))

    async def on_revoked(self) -> None:
        """Commit what is staged while the partitions are still ours."""
        try:
            await self._commit_due(force=True)
        except (KafkaError, TimeoutError):
            log.warning("commit_before_revoke_failed", exc_info=True)
        self._uncommitted.clear()

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        tps = sorted(assigned, key=lambda tp: tp.partition)
        self._rules = self._new_rules()
        self._assigned = True
        self.caught_up = False
        self._live_from.clear()
        self._catch_up_to.clear()
        self._next.clear()
        self._uncommitted.clear()
        if not tps:
            return
        lookback_from = self._clock() - round(self._options.alerts_lookback_s * 1000)
        try:
            async with asyncio.timeout(self._kafka.request_timeout_s * 2):
                ends = await consumer.end_offsets(tps)
                starts = await consumer.offsets_for_times({tp: lookback_from for tp in tps})
                committed = {tp: await consumer.committed(tp) for tp in tps}
        except (KafkaError, TimeoutError):
            log.exception("alerts_rewind_failed")
            raise
        for tp in tps:
            # A new group raises alerts only for what happens from now on.
            live_from = committed[tp] if committed[tp] is not None else ends[tp]
            found = starts.get(tp)
            rewind_to = min(found.offset if found is not None else ends[tp], live_from)
            consumer.seek(tp, rewind_to)
            self._live_from[tp] = live_from
            self._catch_up_to[tp] = ends[tp]
            self._next[tp] = rewind_to
        log.info(
            "alerts_rewound",
            partitions=len(tps),
            history=sum(self._live_from[tp] - self._next[tp] for tp in tps),
        )

    def _new_rules(self) -> AlertRules:
        return AlertRules(self._options.alerts, source_id=self._options.instance)


class _Rewind(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: AlertsLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.on_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop.on_assigned(assigned)
