"""The commands: each opens what it needs, streams the span of the log, and closes it again.

Long reads report progress through ``Progress`` (rich, on stderr). Memory stays bounded by
the attempts of the exam (states, recent ids), not by the events, except for the HTML report,
which holds the selected events' timeline entries (select students for a huge exam).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError

from adapters.dynamo_store import DynamoStatusStore, StatusStoreUnavailable
from adapters.redis_client import redis_client
from adapters.snapshot_store import RedisSnapshotStore
from audit.chain import ChainWriter, Verdict, verify
from audit.dedupe import RecentIds, dedupe_key
from audit.diff import Difference, diff_first_attempts
from audit.errors import FileProblem, StoreUnavailable
from audit.kafka_source import LogSource, LogSpan
from audit.replay import AlertReplay, ExamFold, Incident, first_attempts
from audit.report_csv import COLUMNS, row
from audit.report_html import render
from audit.settings import Settings
from audit.timeline import ExamTimeline
from audit.times import TimeRange, format_time, iso_time
from domain.alerts import AlertThresholds
from schemas.events import EXAM_EVENT, ExamEvent
from schemas.views import StudentView

Advance = Callable[[int], None]
Format = Literal["jsonl", "csv", "html"]


def _no_progress(_: int) -> None:
    pass


@dataclass
class ScanStats:
    read: int = 0
    matched: int = 0
    undecodable: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ExamRecord:
    partition: int
    offset: int
    obj: dict[str, Any]
    raw: bytes


async def _exam_records(
    source: LogSource, span: LogSpan, exam: str, stats: ScanStats, advance: Advance
) -> AsyncIterator[ExamRecord]:
    """The exam's records of the span; a cheap orjson look at ``exam`` filters the rest."""
    started = time.perf_counter()
    async for batch in source.read(span):
        stats.read += len(batch)
        for record in batch:
            value = record.value
            if value is None:
                continue
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError:
                stats.undecodable += 1
                continue
            if not isinstance(obj, dict) or obj.get("exam") != exam:
                continue
            stats.matched += 1
            yield ExamRecord(record.partition, record.offset, obj, value)
        advance(len(batch))
    stats.seconds = time.perf_counter() - started


async def _exam_events(
    source: LogSource, span: LogSpan, exam: str, stats: ScanStats, advance: Advance
) -> AsyncIterator[tuple[ExamRecord, ExamEvent]]:
    """Decoded like the status service decodes (undecodable ones are counted and skipped)."""
    async for record in _exam_records(source, span, exam, stats, advance):
        try:
            event = EXAM_EVENT.validate_json(record.raw)
        except (ValidationError, ValueError):
            stats.undecodable += 1
            continue
        yield record, event


async def _open_source(stack: AsyncExitStack, settings: Settings) -> LogSource:
    source = LogSource(
        settings.kafka,
        client_id=settings.audit.client_id,
        max_records=settings.audit.fetch_max_records,
    )
    await source.open()
    stack.push_async_callback(source.close)
    return source


# -- export -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    exam: str
    span: TimeRange = TimeRange()
    students: frozenset[str] | None = None

    def wants(self, obj: dict[str, Any]) -> bool:
        ts = obj.get("ts")
        if not isinstance(ts, int) or ts not in self.span:
            return False
        student = obj.get("student")
        return self.students is None or student is None or student in self.students


@dataclass
class ExportSummary:
    events: int
    duplicates: int
    stats: ScanStats
    span: LogSpan
    final_hash: str | None = None
    anchor: str | None = None


async def export(
    settings: Settings,
    selection: Selection,
    fmt: Format,
    out: Path,
    tz: ZoneInfo,
    *,
    progress: Callable[[int], Advance] | None = None,
) -> ExportSummary:
    async with AsyncExitStack() as stack:
        source = await _open_source(stack, settings)
        span = await source.plan(selection.span, slack_ms=settings.audit.clock_slack_ms)
        advance = progress(span.total) if progress else _no_progress
        stats = ScanStats()
        recent = RecentIds()

        async def selected() -> AsyncIterator[ExamRecord]:
            async for record in _exam_records(source, span, selection.exam, stats, advance):
                obj = record.obj
                if not selection.wants(obj):
                    continue
                if not recent.first_time(
                    dedupe_key(selection.exam, obj.get("attempt")), str(obj.get("id"))
                ):
                    continue
                yield record

        header = _header(selection, span, tz)
        with out.open("wb") as sink:
            if fmt == "jsonl":
                chain = ChainWriter()
                sink.write(chain.header(header))
                anchor = chain.last_hash
                async for record in selected():
                    sink.write(chain.event(record.partition, record.offset, record.obj))
                count = chain.events
                sink.write(
                    chain.trailer(
                        {
                            "duplicates_dropped": recent.dropped,
                            "undecodable_skipped": stats.undecodable,
                        }
                    )
                )
                return ExportSummary(count, recent.dropped, stats, span, chain.last_hash, anchor)
            if fmt == "csv":
                text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
                writer = csv.writer(text)
                writer.writerow(COLUMNS)
                count = 0
                async for record in selected():
                    writer.writerow(row(record.partition, record.offset, record.obj, tz))
                    count += 1
                text.flush()
                text.detach()
                return ExportSummary(count, recent.dropped, stats, span)
            timeline = ExamTimeline(selection.exam)
            count = 0
            async for record in selected():
                try:
                    event = EXAM_EVENT.validate_python(record.obj)
                except ValidationError:
                    stats.undecodable += 1
                    continue
                timeline.feed(event, record.offset)
                count += 1
            header["events"] = count
            for piece in render(timeline, tz=tz, header=_flat(header)):
                sink.write(piece.encode())
            return ExportSummary(count, recent.dropped, stats, span)
    raise AssertionError("unreachable")  # pragma: no cover - mypy: the with always returns


def _header(selection: Selection, span: LogSpan, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "exam": selection.exam,
        "range": {
            "from": selection.span.start,
            "to": selection.span.end,
            "from_local": iso_time(selection.span.start, tz) or None,
            "to_local": iso_time(selection.span.end, tz) or None,
        },
        "students": sorted(selection.students) if selection.students is not None else None,
        "source": span.describe(),
        "timezone": tz.key,
        # No export time here: the same span exports to the same bytes and final hash, so
        # anyone with access to the log can re-export and compare.
    }


def _flat(header: dict[str, Any]) -> dict[str, object]:
    flat: dict[str, object] = {}
    for name, value in header.items():
        flat[name] = orjson.dumps(value).decode() if isinstance(value, dict | list) else value
    return flat


def verify_file(path: Path, *, expect_final: str | None = None) -> Verdict:
    # A file that cannot be read is a usage error (exit 2), not a broken chain (exit 1).
    try:
        with path.open("rb") as lines:
            return verify(lines, expect_final=expect_final)
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {exc.strerror or exc}") from exc


# -- point in time ------------------------------------------------------------------------------


async def state_at(
    settings: Settings, exam: str, at_ms: int, *, progress: Callable[[int], Advance] | None = None
) -> tuple[list[StudentView], ScanStats]:
    """Every attempt's view as the dashboard showed it with the log's events of ts <= ``at_ms``."""
    fold = ExamFold()
    stats = ScanStats()
    async with AsyncExitStack() as stack:
        source = await _open_source(stack, settings)
        span = await source.plan(TimeRange(None, at_ms), slack_ms=settings.audit.clock_slack_ms)
        advance = progress(span.total) if progress else _no_progress
        async for record, event in _exam_events(source, span, exam, stats, advance):
            if event.ts <= at_ms:
                fold.feed(event, record.offset)
    return fold.views(), stats


# -- rebuild ------------------------------------------------------------------------------------


@dataclass
class RebuildReport:
    expected: dict[str, StudentView]
    differences: list[Difference]
    stats: ScanStats
    written: int = 0
    refused: list[str] = field(default_factory=list)
    snapshot_written: int = 0
    snapshot_behind: list[str] = field(default_factory=list)
    after_repair: list[Difference] | None = None
    # After a repair: items DynamoDB holds for the same attempt at a higher seq than the log
    # span read (a running status service folded later events meanwhile): not a finding.
    moved_on: list[Difference] = field(default_factory=list)


async def rebuild(
    settings: Settings,
    exam: str,
    *,
    repair: bool = False,
    progress: Callable[[int], Advance] | None = None,
) -> RebuildReport:
    fold = ExamFold()
    stats = ScanStats()
    async with AsyncExitStack() as stack:
        source = await _open_source(stack, settings)
        span = await source.plan(TimeRange(), slack_ms=0)
        advance = progress(span.total) if progress else _no_progress
        async for record, event in _exam_events(source, span, exam, stats, advance):
            fold.feed(event, record.offset)
        expected = first_attempts(s.view for s in fold.states.values())
        store = DynamoStatusStore(settings.dynamo, workers=8)
        stack.push_async_callback(store.close)
        try:
            await store.open(create_table=repair)
            stored = {v.student: v for v in await _scan_or_empty(store, exam, repair)}
        except StatusStoreUnavailable as exc:
            raise StoreUnavailable(f"DynamoDB: {exc}") from exc
        report = RebuildReport(expected, diff_first_attempts(expected, stored), stats)
        if not repair:
            return report
        outcomes = await store.put_first_attempt(list(expected.values()))
        report.written = sum(o.result == "written" for o in outcomes)
        report.refused = [
            f"{o.view.student}: {o.result}"
            for o in outcomes
            if o.result != "written" and o.holder != o.view
        ]
        report.snapshot_written, report.snapshot_behind = await _repair_snapshot(
            settings, stack, exam, fold
        )
        try:
            stored = {v.student: v for v in await store.scan_exam(exam)}
        except StatusStoreUnavailable as exc:
            raise StoreUnavailable(f"DynamoDB: {exc}") from exc
        # The status service's writes only move forward, so under live load it may have
        # written states newer than the span this repair folded: those won, rightly.
        ahead = {
            student
            for student, view in stored.items()
            if (want := expected.get(student)) is not None
            and view.attempt == want.attempt
            and view.seq > want.seq
        }
        left = diff_first_attempts(expected, stored)
        report.after_repair = [d for d in left if d.student not in ahead]
        report.moved_on = [d for d in left if d.student in ahead]
        return report
    raise AssertionError("unreachable")  # pragma: no cover


async def _scan_or_empty(store: DynamoStatusStore, exam: str, created: bool) -> list[StudentView]:
    if not created:
        # A check never creates the table: a missing table is reported as every item missing.
        try:
            return await store.scan_exam(exam)
        except StatusStoreUnavailable as exc:
            if "ResourceNotFound" in str(exc):
                return []
            raise
    return await store.scan_exam(exam)


async def _repair_snapshot(
    settings: Settings, stack: AsyncExitStack, exam: str, fold: ExamFold
) -> tuple[int, list[str]]:
    """Write the states Redis lacks or holds at a lower seq; return (written, still behind).

    The store's writes only move forward (seq compared in Redis), so a newer state written
    meanwhile by a running status service is never rolled back. Watermarks are left alone:
    they cover every exam of the log, and this rebuilt one only.
    """
    client = redis_client(settings.redis)
    stack.push_async_callback(client.aclose)
    snapshots = RedisSnapshotStore(client, settings.redis, topic=settings.kafka.events_topic)
    try:
        # partial: the status service may be rebuilding the snapshot; this only writes forward.
        held, _ = await snapshots.read_exam(exam, partial=True)
        seqs = {s.view.attempt: s.view.seq for s in held}
        stale = [s for s in fold.states.values() if seqs.get(s.view.attempt, -2) < s.view.seq]
        if stale:
            await snapshots.write(stale, {})
        after, _ = await snapshots.read_exam(exam, partial=True)
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"Redis: {exc!r}") from exc
    now = {s.view.attempt: s.view.seq for s in after}
    behind = sorted(
        s.view.attempt for s in fold.states.values() if now.get(s.view.attempt, -2) < s.view.seq
    )
    return len(stale) - len(behind), behind


# -- alerts -------------------------------------------------------------------------------------


async def replay_alerts(
    settings: Settings,
    exam: str,
    thresholds: AlertThresholds,
    *,
    span: TimeRange = TimeRange(),
    progress: Callable[[int], Advance] | None = None,
) -> tuple[list[Incident], AlertReplay, ScanStats]:
    replay = AlertReplay(thresholds, tick_ms=settings.audit.alert_tick_ms)
    stats = ScanStats()
    recent = RecentIds()
    async with AsyncExitStack() as stack:
        source = await _open_source(stack, settings)
        log_span = await source.plan(span, slack_ms=settings.audit.clock_slack_ms)
        advance = progress(log_span.total) if progress else _no_progress
        async for record, event in _exam_events(source, log_span, exam, stats, advance):
            if event.ts in span and recent.first_time(dedupe_key(exam, event.attempt), event.id):
                replay.feed(record.partition, event)
    return replay.finish(span.end), replay, stats


def views_table_rows(views: list[StudentView], tz: ZoneInfo) -> Iterator[list[str]]:
    for v in views:
        yield [
            v.student,
            str(v.attempt_no),
            v.status + (" (paused)" if v.paused else ""),
            "" if v.question_current is None else str(v.question_current),
            f"{v.answered}/{v.total}",
            format_time(v.time_end, tz),
            "yes" if v.submitted else "",
            "" if v.score is None else f"{v.score:g}",
            str(v.away_count),
            str(v.offline_count),
            str(v.seq),
        ]
