"""The exam log (group ``notifier``) -> alert rules -> ``alert.raised`` events.

The log is read by ``adapters.group_reader.GroupReader`` (fetch, commits, rebalances, dead
letters); this loop is its batch handler plus a ticker for time-based rules. Offsets of a
batch become committable once its alerts are in Kafka; the reader commits every
``commit_interval_s`` (a commit per batch cost a quarter of the notifier's CPU under load), on
revocation and at close. A commit that fails or times out (a stalled broker) is logged,
counted (``notifier_commit_failures_total``) and retried by the next one: never fatal.

The rules' state lives in memory, so on every assignment the rules start afresh and each
partition is re-read from ``alerts_lookback_s`` back. Events below the group's committed
offset only rebuild state (their alerts were written before). Events from there up to the
end of the partition as it was at assignment may have had their alerts written by the
previous owner after its last commit: each ``alert.raised`` record sits after its cause in
the cause's partition (same key), so an alert raised by such an event is held until the
partition is read to that end, and dropped if its id turned up in the log meanwhile. That is
what makes a restart never write an alert id twice (before, an alert raised after the last
commit was raised again on restart, before its own record was read back). Time-based alerts
(``away_too_long``) wait until every partition is read to its end, for the same reason.

A relevant record that does not decode is put aside on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from adapters.group_reader import Batch, GroupReader, ReaderFailed, ReaderOptions
from adapters.settings import KafkaSettings
from domain.alerts import AlertRules
from domain.backoff import Backoff
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
# A zero commit interval means "as soon as possible"; the reader's commit loop needs a pause.
_MIN_COMMIT_INTERVAL_S = 0.05


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
        self._lock = asyncio.Lock()
        tick_ms = round(options.tick_interval_s * 1000)
        self._reader = GroupReader(
            kafka,
            ReaderOptions(
                name="notifier-alerts",
                group_id=options.group_id,
                client_id=f"{options.instance}-log",
                fetch_min_bytes=options.alerts_fetch_min_bytes,
                fetch_max_wait_ms=tick_ms,
                poll_timeout_ms=tick_ms,
                commit_interval_s=max(options.commit_interval_s, _MIN_COMMIT_INTERVAL_S),
                batches_in_flight=1,
                drain_timeout_s=options.write_timeout_s,
            ),
            self,
            metrics.reader(),
        )
        metrics.lag.follow(self._reader)
        # Per partition: where live alerting starts (the group's commit), the end at
        # assignment, the next offset to read, and alerts held until that end is read.
        self._live_from: dict[int, int] = {}
        self._catch_up_to: dict[int, int] = {}
        self._next: dict[int, int] = {}
        self._held: dict[int, list[AlertRaised]] = {}
        self._logged: set[str] = set()  # alert ids read back while catching up
        self._assigned = False
        self.caught_up = False

    async def open(self) -> None:
        try:
            async with asyncio.timeout(self._options.startup_timeout_s):
                await self._reader.start()
        except (TimeoutError, ReaderFailed) as exc:
            raise StartupFailed("the event log consumer did not start in time") from exc

    async def close(self) -> None:
        """Final commit (retried next time if Kafka does not take it); always stops."""
        await self._reader.close()

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick the time-based rules until ``stopping``; raise if the reader failed."""
        failed = asyncio.ensure_future(self._reader.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while not stopping.is_set():
                await asyncio.wait(
                    [failed, stop],
                    timeout=self._options.tick_interval_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if failed.done():
                    failed.result()  # raises what made the reader fail
                    return
                async with self._lock:
                    self._check_caught_up()  # an empty log sends no batch to say so
                    if self.caught_up:
                        await self._write(self._rules.tick(self._clock()))
        finally:
            for task in (failed, stop):
                task.cancel()

    # -- the reader's batch handler ---------------------------------------------------------

    async def handle(self, batch: Batch) -> None:
        async with self._lock:
            by_partition: dict[int, list[ConsumerRecord]] = {}
            for record in batch.records:
                by_partition.setdefault(record.partition, []).append(record)
            alerts: list[AlertRaised] = []
            for partition, records in by_partition.items():
                # Not rewound yet (fetched before the assignment's callback): read again later.
                if partition in self._live_from and batch.keep(partition):
                    alerts += self._fold(batch, partition, records)
            self._check_caught_up()
            if self.caught_up:
                alerts += self._rules.tick(self._clock())
            await self._write(alerts)

    def _check_caught_up(self) -> None:
        if self._assigned and not self.caught_up:
            self.caught_up = all(
                self._next.get(p, 0) >= end for p, end in self._catch_up_to.items()
            )
            if self.caught_up:
                self._logged.clear()

    def commit_floor(self) -> Mapping[int, int]:
        return {}

    def _fold(
        self, batch: Batch, partition: int, records: list[ConsumerRecord]
    ) -> list[AlertRaised]:
        alerts: list[AlertRaised] = []
        live_from = self._live_from[partition]
        catching_up = self._next.get(partition, 0) < self._catch_up_to.get(partition, 0)
        for record in records:
            value = record.value or b""
            if not any(marker in value for marker in _RELEVANT):
                continue
            try:
                event = decode_event(value)
            except ValidationError as exc:
                self._metrics.bad_records.labels("events").inc()
                batch.dead_letter(record, "undecodable", str(exc))
                continue
            if catching_up and isinstance(event, AlertRaised):
                self._logged.add(event.id)
            raised = self._rules.on_event(event)
            if record.offset >= live_from:
                if catching_up:
                    self._held.setdefault(partition, []).extend(raised)
                else:
                    alerts += raised
        self._next[partition] = records[-1].offset + 1
        if catching_up and self._next[partition] >= self._catch_up_to.get(partition, 0):
            # Read to the end as it was at assignment: what the previous owner wrote is seen.
            held = self._held.pop(partition, [])
            alerts += [a for a in held if a.id not in self._logged]
            if len(held) > len(alerts):
                log.info("alerts_already_logged", partition=partition, n=len(held) - len(alerts))
        return alerts

    async def _write(self, alerts: list[AlertRaised]) -> None:
        await self._writer.write(
            self._kafka.events_topic, [(log_key(a), encode_event(a)) for a in alerts]
        )
        for alert in alerts:
            self._metrics.alerts.labels(alert.kind).inc()
            if alert.kind == "offline":
                self._metrics.exam_offline_alerts.labels(alert.exam).inc()
            log.info("alert_raised", attempt=alert.attempt, kind=alert.kind, detail=alert.detail)

    async def on_revoked(self, partitions: list[int]) -> None:
        async with self._lock:
            for partition in partitions:
                for held in (self._live_from, self._catch_up_to, self._next, self._held):
                    held.pop(partition, None)

    async def on_assigned(self, partitions: list[int]) -> None:
        async with self._lock:
            self._rules = self._new_rules()
            self._assigned = True
            self.caught_up = False
            for held in (self._live_from, self._catch_up_to, self._next, self._held):
                held.clear()
            self._logged.clear()
            if partitions:
                await self._rewind(partitions)

    async def _rewind(self, partitions: list[int]) -> None:
        """Seek each partition back by the lookback; retried while Kafka stalls."""
        consumer, ledger = self._reader.consumer, self._reader.ledger
        tps = [TopicPartition(self._kafka.events_topic, p) for p in partitions]
        lookback_from = self._clock() - round(self._options.alerts_lookback_s * 1000)
        backoff = Backoff(0.1, 5.0)
        async with asyncio.timeout(self._options.startup_timeout_s):
            while True:
                try:
                    async with asyncio.timeout(self._kafka.request_timeout_s * 2):
                        ends = await consumer.end_offsets(tps)
                        starts = await consumer.offsets_for_times({tp: lookback_from for tp in tps})
                        committed = {tp: await consumer.committed(tp) for tp in tps}
                    break
                except (KafkaError, TimeoutError) as exc:
                    log.warning("alerts_rewind_retry", error=repr(exc))
                    await asyncio.sleep(backoff.next())
        for tp in tps:
            # A new group raises alerts only for what happens from now on.
            live_from = committed[tp] if committed[tp] is not None else ends[tp]
            found = starts.get(tp)
            rewind_to = min(found.offset if found is not None else ends[tp], live_from)
            consumer.seek(tp, rewind_to)
            ledger.rewind(tp.partition, rewind_to)
            ledger.committed({tp.partition: live_from})  # re-read history never moves it back
            self._live_from[tp.partition] = live_from
            self._catch_up_to[tp.partition] = ends[tp]
            self._next[tp.partition] = rewind_to
        log.info(
            "alerts_rewound",
            partitions=len(tps),
            history=sum(self._live_from[p] - self._next[p] for p in partitions),
        )

    def _new_rules(self) -> AlertRules:
        return AlertRules(self._options.alerts, source_id=self._options.instance)
