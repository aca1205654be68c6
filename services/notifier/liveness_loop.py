"""Presence + heartbeats -> liveness trackers, one per owned heartbeat partition -> offline /
back-online verdicts.

Notifiers share the attempts by heartbeat partition: every attempt belongs to one partition
(``heartbeat_partition``), each gateway writes every partition its students' beats (and an
empty batch where it has none, so its silence is visible everywhere), and the notifiers of
the group ``<group_id>-liveness`` divide the partitions between them. Each owned partition
gets its own ``LivenessTracker``, fed the whole presence topic filtered to the partition's
attempts (gateway records go to every tracker) and the partition's heartbeats. One notifier
with one partition is the embedded default: the same single tracker as ever.

Start, and every rebalance: rebuild. The trackers of the new assignment replay presence from
the beginning (connections, gateways and the notifiers' own past verdicts, whoever wrote
them), then each partition's heartbeats from a couple of intervals back, then grant fresh
windows. That is the restart path the tracker was built for: no offline storm, verdicts a
crash left without their event re-issued with the same id (unless the log has them), and a
close that happened while nobody owned the partition decided from its presence record. A
revoked partition is dropped before the partition is handed over, after any verdict being
written for it has landed, so two notifiers never judge one attempt at once.

Live: every fetch is fed to the trackers (presence first: a connection must exist before its
beats count) and followed by a tick, so a presence record (a clean close) is answered at once;
an idle fetch returns after the tick interval, which bounds how late a deadline is noticed.

A probe task writes a ``LogProbe`` into each owned heartbeat partition every probe interval;
read back in order with the gateways' batches it tells the partition's tracker whether the
log itself is flowing (domain/liveness.py), so a Kafka stall is not mistaken for every
gateway dying.

A verdict's presence record is written before its log event: the presence record is the
notifiers' memory, and a verdict remembered is re-issued after a restart or rebalance (same
event id) or undone by the student's next sign of life; a log event forgotten could be neither.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from pydantic import ValidationError

from adapters.kafka_clients import group_consumer, reader
from adapters.settings import KafkaSettings
from domain.liveness import LivenessTracker, Verdict
from schemas.events import StudentBackOnline, StudentOffline, encode_event, log_key
from schemas.presence import (
    AttemptLiveness,
    GatewayHeartbeat,
    LogProbe,
    PresenceRecord,
    StudentConnection,
    StudentDisconnection,
    decode_heartbeat,
    decode_presence,
    heartbeat_partition,
    liveness_key,
    probe_key,
)
from services.notifier.errors import StartupFailed, WriteFailed
from services.notifier.metrics import NotifierMetrics
from services.notifier.settings import NotifierOptions
from services.notifier.writer import Writer

log = structlog.get_logger(__name__)

Clock = Callable[[], int]
_GAUGE_PERIOD_MS = 1_000
_ATTEMPT_KEY = b"att/"


class _Reassigned(Exception):
    """The group changed this notifier's partitions while it was rebuilding."""


class LivenessLoop:
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
        self._partitions = kafka.heartbeats_partitions
        self._presence = TopicPartition(kafka.presence_topic, 0)
        self._presence_reader: AIOKafkaConsumer | None = None
        self._beats: AIOKafkaConsumer | None = None
        # The trackers of the partitions this notifier owns, by partition; empty between a
        # revocation and the rebuild that follows the new assignment.
        self.shards: dict[int, LivenessTracker] = {}
        self._reassigned = asyncio.Event()
        # Held while verdicts are decided and written: a revocation waits for it, so a
        # partition changes hands only once its verdicts in flight have landed.
        self._deciding = asyncio.Lock()
        self._revocations = 0
        self._rebuilt = False
        self._gauges_at = 0
        self._gauged_exams: set[str] = set()

    @property
    def ready(self) -> bool:
        """Rebuilt for an assignment at least once (owning no partition counts)."""
        return self._rebuilt

    async def open(self) -> None:
        """Join the group and rebuild for the first assignment; afterwards the trackers are
        live."""
        self._presence_reader = reader(self._kafka, client_id=f"{self._options.instance}-presence")
        self._beats = group_consumer(
            self._kafka,
            group_id=f"{self._options.group_id}-liveness",
            client_id=f"{self._options.instance}-beats",
        )
        try:
            async with asyncio.timeout(self._options.startup_timeout_s):
                await self._presence_reader.start()
                self._presence_reader.assign([self._presence])
                await self._beats.start()
                self._beats.subscribe([self._kafka.heartbeats_topic], listener=_Listener(self))
                while not self._rebuilt:
                    # Records fetched before the first rebuild are read again by it.
                    await self._beats.getmany(timeout_ms=200)
                    if self._reassigned.is_set():
                        await self._rebuild()
        except TimeoutError as exc:
            raise StartupFailed("presence/heartbeat replay did not finish in time") from exc

    async def close(self) -> None:
        for consumer in (self._beats, self._presence_reader):
            if consumer is not None:
                await consumer.stop()
        self._beats = self._presence_reader = None

    async def run(self, stopping: asyncio.Event) -> None:
        beats, presence = self._beats, self._presence_reader
        assert beats is not None and presence is not None, "open() first"
        tick_ms = round(self._options.tick_interval_s * 1000)
        probes = asyncio.create_task(self._send_probes(stopping), name="log-probes")
        try:
            while not stopping.is_set():
                batches = await beats.getmany(timeout_ms=tick_ms)
                if self._reassigned.is_set():
                    # Positions are set again from scratch: what was just fetched is re-read.
                    async with asyncio.timeout(self._options.startup_timeout_s):
                        await self._rebuild()
                    continue
                news = await presence.getmany(self._presence, timeout_ms=0)
                async with self._deciding:
                    # Presence before beats: a connection must exist before its beats count.
                    self._feed_presence(news.get(self._presence, []))
                    for tp, records in batches.items():
                        self._feed_beats(tp.partition, records)
                    await self.step()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes

    # -- assignment ------------------------------------------------------------------------

    async def _revoked(self) -> None:
        async with self._deciding:
            self.shards = {}
            self._revocations += 1
            self._metrics.liveness_partitions.set(0)

    async def _rebuild(self) -> None:
        while self._reassigned.is_set():
            self._reassigned.clear()
            try:
                await self._rebuild_once()
            except (_Reassigned, IllegalStateError):
                log.info("liveness_rebuild_restarted", reason="the assignment changed meanwhile")
                self._reassigned.set()

    async def _rebuild_once(self) -> None:
        beats, presence = self._beats, self._presence_reader
        assert beats is not None and presence is not None
        revocations = self._revocations
        owned = sorted(tp.partition for tp in beats.assignment())
        shards = {
            p: LivenessTracker(self._options.liveness(), source_id=self._options.instance)
            for p in owned
        }
        await presence.seek_to_beginning(self._presence)
        end = (await presence.end_offsets([self._presence]))[self._presence]
        while await presence.position(self._presence) < end:
            got = await presence.getmany(self._presence, timeout_ms=500)
            self._feed_presence(got.get(self._presence, []), shards)
        tps = [TopicPartition(self._kafka.heartbeats_topic, p) for p in owned]
        if tps:
            await self._seek_recent_beats(beats, tps, shards)
            ends = await beats.end_offsets(tps)
            open_tps = [tp for tp in tps if await beats.position(tp) < ends[tp]]
            while open_tps:
                if self._reassigned.is_set():
                    raise _Reassigned
                got = await beats.getmany(*open_tps, timeout_ms=500)
                for tp, records in got.items():
                    self._feed_beats(tp.partition, records, shards)
                open_tps = [tp for tp in open_tps if await beats.position(tp) < ends[tp]]
        now = self._clock()
        for tracker in shards.values():
            tracker.start(now)
        await self._drop_logged_reissues(shards.values())
        async with self._deciding:
            # A revocation since the start (its callback may have run just now) makes these
            # trackers stale: they must never judge partitions handed to someone else.
            if self._reassigned.is_set() or self._revocations != revocations:
                raise _Reassigned
            self.shards = shards
        self._rebuilt = True
        self._metrics.liveness_partitions.set(len(shards))
        self._metrics.liveness_rebuilds.inc()
        log.info(
            "liveness_rebuilt",
            partitions=owned,
            of=self._partitions,
            connections=sum(t.connection_count for t in shards.values()),
            offline=sum(t.offline_count for t in shards.values()),
        )

    async def _seek_recent_beats(
        self,
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
        shards: dict[int, LivenessTracker],
    ) -> None:
        # Each gateway batch carries every student of the partition that beat since the
        # previous one, so a couple of the longest intervals back shows every connected
        # student's last beat.
        wanted = {}
        for tp in tps:
            lookback = (
                self._options.heartbeat_misses
                * shards[tp.partition].longest_heartbeat_interval_ms()
            )
            wanted[tp] = self._clock() - lookback - 1_000
        found = await consumer.offsets_for_times(wanted)
        for tp in tps:
            start = found.get(tp)
            if start is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, start.offset)

    # -- live -------------------------------------------------------------------------------

    async def _send_probes(self, stopping: asyncio.Event) -> None:
        """Mark each owned heartbeat partition with this notifier's time, whatever Kafka is
        doing."""
        interval_s = self._options.probe_interval_s
        key = probe_key(self._options.instance)
        while not stopping.is_set():
            probe = LogProbe(source=self._options.instance, sent_at=self._clock())
            value = probe.model_dump_json().encode()
            for partition in list(self.shards):
                try:
                    # Queued, not awaited: a stalled log must not slow the probe's own clock.
                    await self._writer.enqueue(
                        self._kafka.heartbeats_topic, key, value, partition=partition
                    )
                except WriteFailed as exc:
                    log.warning("log_probe_not_sent", partition=partition, error=str(exc))
            await asyncio.sleep(interval_s)

    async def step(self) -> None:
        """Write whatever the trackers decide now."""
        now = self._clock()
        verdicts = [v for tracker in self.shards.values() for v in tracker.tick(now)]
        if verdicts:
            await self._write(verdicts)
        if now - self._gauges_at >= _GAUGE_PERIOD_MS:
            self._gauges_at = now
            trackers = list(self.shards.values())
            self._metrics.connections.set(sum(t.connection_count for t in trackers))
            self._metrics.offline_attempts.set(sum(t.offline_count for t in trackers))
            self._set_exam_gauges(trackers)

    def _set_exam_gauges(self, trackers: list[LivenessTracker]) -> None:
        connected: dict[str, int] = {}
        for tracker in trackers:
            for exam, students in tracker.connected_by_exam().items():
                connected[exam] = connected.get(exam, 0) + students
        for exam in self._gauged_exams - connected.keys():
            # An exam nobody is connected to any more: its series ends instead of lingering.
            self._metrics.exam_connected.remove(exam)
        for exam, students in connected.items():
            self._metrics.exam_connected.labels(exam).set(students)
        self._gauged_exams = set(connected)

    async def _drop_logged_reissues(self, trackers: Iterable[LivenessTracker]) -> None:
        """Re-issue only what a crash really lost: look for each event in the recent log."""
        wanted: dict[str, tuple[LivenessTracker, str, int]] = {}
        for tracker in trackers:
            for event_id, (attempt, written) in tracker.reissues().items():
                wanted[event_id] = (tracker, attempt, written)
        if not wanted:
            return
        by_key = {attempt.encode(): event_id for event_id, (_, attempt, _) in wanted.items()}
        since = min(written for _, _, written in wanted.values()) - 5_000
        consumer = reader(self._kafka, client_id=f"{self._options.instance}-reissue-check")
        await consumer.start()
        try:
            topic = self._kafka.events_topic
            tps = [TopicPartition(topic, p) for p in range(self._kafka.events_partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.offsets_for_times(dict.fromkeys(tps, since))
            for tp in tps:
                found = starts.get(tp)
                consumer.seek(tp, ends[tp] if found is None else found.offset)
            open_tps = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            while open_tps and by_key:
                batches = await consumer.getmany(*open_tps, timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        found_id = by_key.get(record.key or b"")
                        # The id is in the raw JSON; decoding every recent event is not needed.
                        if found_id is not None and f'"{found_id}"'.encode() in record.value:
                            owner, logged, _ = wanted[found_id]
                            owner.confirm_logged(logged)
                            del by_key[record.key]
                open_tps = [tp for tp in open_tps if await consumer.position(tp) < ends[tp]]
        finally:
            await consumer.stop()

    def _feed_presence(
        self, records: list[ConsumerRecord], shards: dict[int, LivenessTracker] | None = None
    ) -> None:
        shards = self.shards if shards is None else shards
        if not shards:
            return
        for record in records:
            try:
                value = None if record.value is None else decode_presence(record.value)
            except ValidationError:
                self._metrics.bad_records.labels("presence").inc()
                log.warning("bad_presence_record", offset=record.offset, key=record.key)
                continue
            key = record.key or b""
            owner = self._owner(key, value)
            if owner is None:
                for tracker in shards.values():
                    tracker.on_presence(key, value, record.timestamp)
            elif (mine := shards.get(owner)) is not None:
                mine.on_presence(key, value, record.timestamp)

    def _owner(self, key: bytes, value: PresenceRecord | None) -> int | None:
        """The partition whose tracker takes this record; None: every tracker (gateways,
        watches, and a connection's tombstone, which only its tracker knows)."""
        if self._partitions == 1:
            return 0
        if isinstance(value, StudentConnection | StudentDisconnection | AttemptLiveness):
            return heartbeat_partition(value.attempt, self._partitions)
        if value is None and key.startswith(_ATTEMPT_KEY):
            return heartbeat_partition(key[len(_ATTEMPT_KEY) :].decode(), self._partitions)
        return None

    def _feed_beats(
        self,
        partition: int,
        records: list[ConsumerRecord],
        shards: dict[int, LivenessTracker] | None = None,
    ) -> None:
        tracker = (self.shards if shards is None else shards).get(partition)
        if tracker is None:
            return
        for record in records:
            try:
                beat = decode_heartbeat(record.value or b"")
            except ValidationError:
                self._metrics.bad_records.labels("heartbeats").inc()
                log.warning("bad_heartbeat_record", partition=partition, offset=record.offset)
                continue
            if isinstance(beat, GatewayHeartbeat):
                tracker.on_heartbeat(beat)
            elif beat.source == self._options.instance and tracker.started:
                self._on_probe(tracker, beat)

    def _on_probe(self, tracker: LivenessTracker, probe: LogProbe) -> None:
        received = self._clock()
        stalls = tracker.log_stalls
        tracker.on_probe(probe.sent_at, received)
        self._metrics.log_probe_latency.observe(max(0, received - probe.sent_at) / 1000)
        if tracker.log_stalls > stalls:
            self._metrics.log_stalls.inc()
            log.warning(
                "log_stalled",
                probe_latency_ms=received - probe.sent_at,
                effect="loss-by-silence verdicts wait; fresh windows granted",
            )

    async def _write(self, verdicts: list[Verdict]) -> None:
        await self._writer.write(
            self._kafka.presence_topic,
            [
                (liveness_key(v.liveness.attempt), v.liveness.model_dump_json().encode())
                for v in verdicts
            ],
        )
        events = [v.event for v in verdicts if v.event is not None]
        await self._writer.write(
            self._kafka.events_topic, [(log_key(e), encode_event(e)) for e in events]
        )
        written = self._clock()
        for verdict in verdicts:
            event = verdict.event
            if verdict.reissued:
                log.info("offline_reissued", attempt=verdict.liveness.attempt)
                continue
            if isinstance(event, StudentOffline):
                self._metrics.offline.labels(event.reason).inc()
                if verdict.due_ms is not None:
                    lag_s = max(0, written - verdict.due_ms) / 1000
                    self._metrics.detection_lag.labels(event.reason).observe(lag_s)
                log.info(
                    "student_offline", attempt=event.attempt, reason=event.reason, since=event.since
                )
            elif isinstance(event, StudentBackOnline):
                self._metrics.back_online.labels(event.reason).inc()
                log.info("student_back_online", attempt=event.attempt, offline_ms=event.offline_ms)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: LivenessLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Before anyone else gets them: this notifier judges none of them from here.
        await self._loop._revoked()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # Rebuilt by the loop (not here: a callback must not read the consumer it serves).
        self._loop._reassigned.set()
