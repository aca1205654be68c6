"""``proctor-audit`` / ``python -m audit``: audits over the exam event log.

Commands: export, verify, at, rebuild, alerts (``--help`` on each). Exit codes: 0 fine,
1 a finding (broken chain, differences, refused repairs), 2 an error (bad argument,
Kafka/DynamoDB/Redis unreachable).
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from adapters.cli import plain_text, version
from audit.commands import (
    Advance,
    ScanStats,
    Selection,
    export,
    rebuild,
    replay_alerts,
    state_at,
    verify_file,
    views_table_rows,
)
from audit.errors import AuditError
from audit.settings import Settings
from audit.times import TimeRange, format_time, parse_time, zone
from domain.alerts import AlertThresholds

# Piped output (files, less) gets wide tables rather than 80 squeezed columns.
_out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
_err = Console(stderr=True, soft_wrap=True)


EXIT_CODES = """\
exit codes:
  0  fine
  1  a finding: a broken chain, differences with the views, a repair that did not land
  2  an error: a bad argument, a file that cannot be read or written, Kafka, DynamoDB or
     Redis unreachable"""

TIME_HELP = "ISO 8601 (e.g. 2026-01-01T09:30, 2026-01-01T02:30:00Z) or epoch ms; zone-less: --tz"
TZ_HELP = "exam time zone, an IANA name such as Asia/Jakarta (default: PROCTOR_AUDIT__TIMEZONE)"


def _parser() -> argparse.ArgumentParser:
    # --quiet is accepted before or after the command; SUPPRESS keeps the command's parser
    # from resetting a --quiet given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar"
    )
    parser = argparse.ArgumentParser(
        prog="proctor-audit",
        description=plain_text(__doc__ or ""),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"proctor-audit {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )

    p = command("export", "export an exam's events (JSONL with hash chain, CSV, HTML)")
    p.add_argument("--exam", required=True, help="exam id")
    p.add_argument("--from", dest="start", metavar="TIME", help=f"first event time; {TIME_HELP}")
    p.add_argument("--to", dest="end", metavar="TIME", help="last event time (inclusive)")
    p.add_argument(
        "--students",
        metavar="IDS",
        help="comma-separated student ids (exam-wide events always kept)",
    )
    p.add_argument(
        "--format", choices=("jsonl", "csv", "html"), default="jsonl", help="(default: jsonl)"
    )
    p.add_argument("--out", required=True, type=Path, metavar="PATH", help="file to write")
    p.add_argument("--tz", metavar="ZONE", help=TZ_HELP)

    p = command("verify", "check the hash chain of a JSONL export")
    p.add_argument("path", type=Path, help="the JSONL export")
    p.add_argument(
        "--expect-final",
        metavar="HASH",
        help=(
            "the file's final hash recorded at export time and kept elsewhere: the hash export"
            " printed (the trailer line's hash); the trailer's final_hash field, which is the"
            " last event line's hash, is accepted too"
        ),
    )

    p = command("at", "every student's state as the dashboard showed it at a time")
    p.add_argument("--exam", required=True, help="exam id")
    p.add_argument("--time", required=True, metavar="TIME", help=TIME_HELP)
    p.add_argument("--format", choices=("table", "json"), default="table", help="(default: table)")
    p.add_argument("--tz", metavar="ZONE", help=TZ_HELP)

    p = command("rebuild", "recompute first-attempt states and compare with DynamoDB")
    p.add_argument("--exam", required=True, help="exam id")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare only (default)")
    mode.add_argument("--repair", action="store_true", help="write DynamoDB and the Redis snapshot")

    p = command("alerts", "re-run the alert rules over history with other thresholds")
    p.add_argument("--exam", required=True, help="exam id")
    p.add_argument(
        "--away-threshold-s",
        type=float,
        default=30.0,
        metavar="S",
        help="an away episode longer than this is an incident (default: 30)",
    )
    p.add_argument(
        "--repeated-away",
        type=int,
        default=3,
        metavar="N",
        help="this many away episodes within --window-s make repeated_away (default: 3)",
    )
    p.add_argument(
        "--window-s",
        type=float,
        default=600.0,
        metavar="S",
        help="window of repeated_away (default: 600)",
    )
    p.add_argument("--from", dest="start", metavar="TIME", help=TIME_HELP)
    p.add_argument("--to", dest="end", metavar="TIME", help="(inclusive)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="(default: table)")
    p.add_argument("--tz", metavar="ZONE", help=TZ_HELP)
    return parser


@contextmanager
def _progress(quiet: bool, what: str) -> Iterator[Callable[[int], Advance]]:
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeRemainingColumn(),
        console=_err,
        disable=quiet,
        transient=True,
    ) as bar:

        def start(total: int) -> Advance:
            task = bar.add_task(what, total=total)
            return lambda n: bar.advance(task, n)

        yield start


def _report_rate(stats: ScanStats) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _err.print(
        f"read {stats.read:,} records ({stats.matched:,} of the exam, {stats.undecodable} "
        f"undecodable) in {stats.seconds:.1f} s: {stats.rate:,.0f} records/s; "
        f"peak RSS {peak_mb:,.0f} MB"
    )


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    tz = zone(getattr(args, "tz", None) or settings.audit.timezone)
    quiet = getattr(args, "quiet", False) or not _err.is_terminal
    match args.command:
        case "export":
            span = TimeRange(
                parse_time(args.start, tz) if args.start else None,
                parse_time(args.end, tz) if args.end else None,
            )
            students = (
                frozenset(s for s in args.students.split(",") if s) if args.students else None
            )
            with _progress(quiet, "export") as progress:
                summary = await export(
                    settings,
                    Selection(args.exam, span, students),
                    args.format,
                    args.out,
                    tz,
                    progress=progress,
                )
            _err.print(
                f"{summary.events:,} events written to {args.out} "
                f"({summary.duplicates} resends dropped)"
            )
            if summary.final_hash:
                _out.print(f"final hash {summary.final_hash}  (keep it apart from the file)")
            _report_rate(summary.stats)
            return 0
        case "verify":
            verdict = verify_file(args.path, expect_final=args.expect_final)
            if verdict.ok:
                _out.print(
                    f"intact: {verdict.events:,} events, final hash {verdict.final_hash}"
                    f"\n  (the trailer's own hash; its final_hash field is the last event's"
                    f" hash, {verdict.last_event_hash})",
                    markup=False,
                )
                return 0
            ident = f" (event {verdict.event_id})" if verdict.event_id else ""
            _out.print(
                f"BROKEN at line {verdict.line}{ident}: {verdict.problem}: {verdict.message}",
                markup=False,
            )
            return 1
        case "at":
            at_ms = parse_time(args.time, tz)
            with _progress(quiet, "replay") as progress:
                views, stats = await state_at(settings, args.exam, at_ms, progress=progress)
            if args.format == "json":
                sys.stdout.buffer.write(orjson.dumps([v.model_dump() for v in views]) + b"\n")
            else:
                table = Table(title=f"{args.exam} at {format_time(at_ms, tz)}")
                for column in (
                    "student",
                    "attempt",
                    "status",
                    "question",
                    "answered",
                    "deadline",
                    "submitted",
                    "score",
                    "away",
                    "offline",
                    "seq",
                ):
                    table.add_column(column)
                for cells in views_table_rows(views, tz):
                    table.add_row(*cells)
                _out.print(table)
            _report_rate(stats)
            return 0
        case "rebuild":
            with _progress(quiet, "rebuild") as progress:
                report = await rebuild(settings, args.exam, repair=args.repair, progress=progress)
            _out.print(
                f"{len(report.expected)} students in the log; "
                f"{len(report.differences)} differences with DynamoDB"
            )
            for difference in report.differences:
                _out.print("  " + difference.describe(), markup=False)
            _report_rate(report.stats)
            if not args.repair:
                return 1 if report.differences else 0
            _out.print(
                f"repair: {report.written} items written, {report.snapshot_written} "
                f"snapshot states written; {len(report.after_repair or [])} differences left"
            )
            for refused in report.refused:
                _out.print(f"  refused: {refused}", markup=False)
            for attempt in report.snapshot_behind:
                _out.print(f"  snapshot still behind the log: {attempt}", markup=False)
            return 1 if report.after_repair or report.snapshot_behind else 0
        case "alerts":
            thresholds = AlertThresholds(
                away_threshold_s=args.away_threshold_s,
                repeated_away_count=args.repeated_away,
                repeated_away_window_s=args.window_s,
            )
            span = TimeRange(
                parse_time(args.start, tz) if args.start else None,
                parse_time(args.end, tz) if args.end else None,
            )
            with _progress(quiet, "alerts") as progress:
                incidents, replay, stats = await replay_alerts(
                    settings, args.exam, thresholds, span=span, progress=progress
                )
            if args.format == "json":
                rows = [
                    i.alert.model_dump(exclude_none=True) | {"raised_live": i.raised_live}
                    for i in incidents
                ]
                sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
            else:
                table = Table(title=f"{args.exam}: incidents with {thresholds.model_dump()}")
                for column in ("time", "student", "kind", "detail", "raised live"):
                    table.add_column(column)
                for i in incidents:
                    a = i.alert
                    table.add_row(
                        format_time(a.ts, tz),
                        a.student or "",
                        a.kind,
                        a.detail,
                        "yes" if i.raised_live else "no",
                    )
                _out.print(table)
            live_matched = sum(i.raised_live for i in incidents)
            _err.print(
                f"{len(incidents)} incidents ({live_matched} also raised live); "
                f"{replay.live_alerts} alerts in the log"
            )
            _report_rate(stats)
            return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    try:
        return uvloop.run(_run(args, settings))
    except AuditError as exc:
        _err.print(f"error: {exc}", markup=False)
        return 2
    except OSError as exc:  # e.g. --out in a directory that does not exist
        _err.print(f"error: {exc}", markup=False)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
