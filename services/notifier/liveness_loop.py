"""Presence + heartbeats -> the liveness tracker -> offline / back-online verdicts.

One group-less consumer reads both single-partition topics. Start: presence whole from the
beginning (connections, gateways and the notifier's own past verdicts), then heartbeats from a
couple of intervals back (sought by timestamp), then the tracker grants fresh windows. Live:
every fetch is fed to the tracker and followed by a tick, so a presence record (a clean close)
is answered at once; an idle fetch returns after the tick interval, which bounds how late a
deadline is noticed.

A probe task writes a ``LogProbe`` into the heartbeat partition every probe interval; read back
in order with the gateways' batches it tells the tracker whether the log itself is flowing
(domain/liveness.py), so a Kafka stall is not mistaken for every gateway dying.

A verdict's presence record is written before its log event: the presence record is the
notifier's memory, and a verdict it remembers is re-issued after a restart (same event id) or
undone by the student's next sign of life; a log event it had forgotten could be neither.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from adapters.kafka_clients import reader
from adapters.settings import KafkaSettings
from domain.liveness import LivenessTracker, Verdict
from schemas.events import StudentBackOnline, StudentOffline, encode_event, log_key
from schemas.presence import (
    GatewayHeartbeat,
    LogProbe,
    decode_heartbeat,
    decode_presence,
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
        self.tracker = LivenessTracker(options.liveness(), source_id=options.instance)
        self._presence = TopicPartition(kafka.presence_topic, 0)
        self._beats = TopicPartition(kafka.heartbeats_topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._gauges_at = 0
        self._gauged_exams: set[str] = set()

    async def open(self) -> None:
        """Replay presence and recent heartbeats; afterwards the tracker is live."""
        consumer = reader(self._kafka, client_id=f"{self._options.instance}-presence")
        self._consumer = consumer
        try:
            async with asyncio.timeout(self._options.startup_timeout_s):
                await consumer.start()
                consumer.assign([self._presence, self._beats])
                # No prefetch of old beats while presence replays: they would be skipped anyway.
                consumer.pause(self._beats)
                await consumer.seek_to_beginning(self._presence)
                await self._read_to_end(consumer, self._presence)
                await self._seek_recent_beats(consumer)
                consumer.resume(self._beats)
                await self._read_to_end(consumer, self._beats)
        except TimeoutError as exc:
            raise StartupFailed("presence/heartbeat replay did not finish in time") from exc
        now = self._clock()
        self.tracker.start(now)
        try:
            async with asyncio.timeout(self._options.startup_timeout_s):
                await self._drop_logged_reissues()
        except TimeoutError as exc:
            raise StartupFailed("the log's recent offline events could not be read") from exc
        log.info(
            "liveness_replayed",
            connections=self.tracker.connection_count,
            offline=self.tracker.offline_count,
        )

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None, "open() first"
        tick_ms = round(self._options.tick_interval_s * 1000)
        probes = asyncio.create_task(self._send_probes(stopping), name="log-probes")
        try:
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=tick_ms)
                # Presence before beats: a connection must exist before its beats count.
                self._feed_presence(batches.get(self._presence, []))
                self._feed_beats(batches.get(self._beats, []))
                await self.step()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes

    async def _send_probes(self, stopping: asyncio.Event) -> None:
        """Mark the heartbeat partition with this notifier's time, whatever Kafka is doing."""
        interval_s = self._options.probe_interval_s
        key = probe_key(self._options.instance)
        while not stopping.is_set():
            probe = LogProbe(source=self._options.instance, sent_at=self._clock())
            try:
                # Queued, not awaited: a stalled log must not slow the probe's own clock.
                await self._writer.enqueue(
                    self._kafka.heartbeats_topic, key, probe.model_dump_json().encode()
                )
            except WriteFailed as exc:
                log.warning("log_probe_not_sent", error=str(exc))
            await asyncio.sleep(interval_s)

    async def step(self) -> None:
        """Write whatever the tracker decides now."""
        now = self._clock()
        verdicts = self.tracker.tick(now)
        if verdicts:
            await self._write(verdicts)
        if now - self._gauges_at >= _GAUGE_PERIOD_MS:
            self._gauges_at = now
            self._metrics.connections.set(self.tracker.connection_count)
            self._metrics.offline_attempts.set(self.tracker.offline_count)
            self._set_exam_gauges()

    def _set_exam_gauges(self) -> None:
        connected = self.tracker.connected_by_exam()
        for exam in self._gauged_exams - connected.keys():
            # An exam nobody is connected to any more: its series ends instead of lingering.
            self._metrics.exam_connected.remove(exam)
        for exam, students in connected.items():
            self._metrics.exam_connected.labels(exam).set(students)
        self._gauged_exams = set(connected)

    async def _drop_logged_reissues(self) -> None:
        """Re-issue only what a crash really lost: look for each event in the recent log."""
        wanted = self.tracker.reissues()
        if not wanted:
            return
        by_key = {attempt.encode(): event_id for event_id, (attempt, _) in wanted.items()}
        since = min(written for _, written in wanted.values()) - 5_000
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
                        event_id = by_key.get(record.key or b"")
                        # The id is in the raw JSON; decoding every recent event is not needed.
                        if event_id is not None and f'"{event_id}"'.encode() in record.value:
                            self.tracker.confirm_logged(wanted[event_id][0])
                            del by_key[record.key]
                open_tps = [tp for tp in open_tps if await consumer.position(tp) < ends[tp]]
        finally:
            await consumer.stop()

    async def _read_to_end(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            records = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            if tp == self._presence:
                self._feed_presence(records)
            else:
                self._feed_beats(records)

    async def _seek_recent_beats(self, consumer: AIOKafkaConsumer) -> None:
        # Each gateway batch carries every student that beat since the previous one, so a
        # couple of the longest intervals back shows every connected student's last beat.
        lookback = self._options.heartbeat_misses * self.tracker.longest_heartbeat_interval_ms()
        found = await consumer.offsets_for_times({self._beats: self._clock() - lookback - 1_000})
        start = found.get(self._beats)
        if start is None:
            await consumer.seek_to_end(self._beats)
        else:
            consumer.seek(self._beats, start.offset)

    def _feed_presence(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            try:
                value = None if record.value is None else decode_presence(record.value)
            except ValidationError:
                self._metrics.bad_records.labels("presence").inc()
                log.warning("bad_presence_record", offset=record.offset, key=record.key)
                continue
            self.tracker.on_presence(record.key or b"", value, record.timestamp)

    def _feed_beats(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            try:
                beat = decode_heartbeat(record.value or b"")
            except ValidationError:
                self._metrics.bad_records.labels("heartbeats").inc()
                log.warning("bad_heartbeat_record", offset=record.offset)
                continue
            if isinstance(beat, GatewayHeartbeat):
                self.tracker.on_heartbeat(beat)
            elif beat.source == self._options.instance and self.tracker.started:
                self._on_probe(beat)

    def _on_probe(self, probe: LogProbe) -> None:
        received = self._clock()
        stalls = self.tracker.log_stalls
        self.tracker.on_probe(probe.sent_at, received)
        self._metrics.log_probe_latency.observe(max(0, received - probe.sent_at) / 1000)
        if self.tracker.log_stalls > stalls:
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
