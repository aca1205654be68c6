"""Export against the real Kafka: every event once, per-attempt order, ranges, formats, verify."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from adapters.settings import CommonSettings
from audit.commands import Selection, export, verify_file
from audit.sample_exam import simulate
from audit.settings import Settings
from audit.times import TimeRange, zone
from tests.audit.conftest import Sent, log_order, write_log
from tests.conftest import scaled, unique

pytestmark = pytest.mark.integration

JAKARTA = zone("Asia/Jakarta")


def once_per_attempt(sent: list[Sent]) -> dict[str, list[str]]:
    """What an export must hold: per attempt (or exam), ids in log order, resends dropped."""
    expected: dict[str, list[str]] = defaultdict(list)
    for item in log_order(sent):
        key = item.event.attempt or f"exam:{item.event.exam}"
        if item.event.id not in expected[key]:
            expected[key].append(item.event.id)
    return dict(expected)


def exported(path: Path) -> tuple[dict[str, object], list[dict[str, object]], dict[str, object]]:
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return lines[0], lines[1:-1], lines[-1]


def per_attempt(events: list[dict[str, object]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for line in events:
        event = line["event"]
        assert isinstance(event, dict)
        found[str(event.get("attempt") or f"exam:{event['exam']}")].append(str(event["id"]))
    return dict(found)


async def test_jsonl_export_holds_every_event_once_in_attempt_order_and_verifies(
    settings: CommonSettings, audit: Settings, tmp_path: Path
) -> None:
    exam = unique("exam")
    sent = await write_log(settings, simulate(exam, students=25, steps=130, seed=3))
    # Another exam in the same log stays out of the export.
    await write_log(settings, simulate(unique("other"), students=3, steps=5))
    resends = len(sent) - len({(s.event.attempt, s.event.id) for s in sent})
    assert resends > 0, "the simulated exam should contain client resends"

    out = tmp_path / "exam.jsonl"
    summary = await export(audit, Selection(exam), "jsonl", out, JAKARTA)
    header, events, trailer = exported(out)
    assert per_attempt(events) == once_per_attempt(sent)
    assert summary.events == trailer["count"] == len(events) == len(sent) - resends
    assert summary.duplicates == resends
    assert header["exam"] == exam and header["kind"] == "header"
    assert header["source"] == {
        "topic": settings.kafka.events_topic,
        "partitions": {str(p): [s, e] for p, (s, e) in summary.span.ranges.items()},
    }
    # seq is the record's place in the log.
    where = {(s.event.id, s.partition, s.offset) for s in sent}
    for line in events[:50]:
        seq, event = line["seq"], line["event"]
        assert isinstance(seq, dict) and isinstance(event, dict)
        assert (event["id"], seq["partition"], seq["offset"]) in where

    verdict = verify_file(out, expect_final=summary.final_hash)
    assert verdict.ok and verdict.events == len(events)
    # The same span exports to the same bytes: anyone can re-export and compare hashes.
    again = await export(audit, Selection(exam), "jsonl", tmp_path / "again.jsonl", JAKARTA)
    assert again.final_hash == summary.final_hash
    assert (tmp_path / "again.jsonl").read_bytes() == out.read_bytes()
    await _tampering_is_named(out, tmp_path)


async def _tampering_is_named(out: Path, tmp_path: Path) -> None:
    lines = out.read_bytes().splitlines(keepends=True)
    target = orjson.loads(lines[40])
    target_id = target["event"]["id"]

    changed = list(lines)
    obj = orjson.loads(changed[40])
    obj["event"]["ts"] += 1
    changed[40] = orjson.dumps(obj) + b"\n"
    removed = lines[:40] + lines[41:]
    inserted = lines[:40] + [lines[12]] + lines[40:]
    cases = {
        "changed": (changed, 41, target_id),
        "removed": (removed, 41, orjson.loads(lines[41])["event"]["id"]),
        "inserted": (inserted, 41, orjson.loads(lines[12])["event"]["id"]),
    }
    for problem, (content, line, event_id) in cases.items():
        path = tmp_path / f"{problem}.jsonl"
        path.write_bytes(b"".join(content))
        verdict = verify_file(path)
        assert (verdict.ok, verdict.problem, verdict.line, verdict.event_id) == (
            False,
            problem,
            line,
            event_id,
        )
        # The command line says the same and exits 1.
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "audit",
            "verify",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, _ = await asyncio.wait_for(cli.communicate(), scaled(30))
        assert cli.returncode == 1
        assert f"line {line}" in stdout.decode() and str(event_id) in stdout.decode()


async def test_time_range_and_students_select_exactly_those_events(
    settings: CommonSettings, audit: Settings, tmp_path: Path
) -> None:
    exam = unique("exam")
    sent = await write_log(settings, simulate(exam, students=10, steps=60, seed=5))
    times = sorted(s.event.ts for s in sent)
    start, end = times[len(times) // 3], times[2 * len(times) // 3]
    students = frozenset({"s00001", "s00004"})
    out = tmp_path / "range.jsonl"
    summary = await export(
        audit, Selection(exam, TimeRange(start, end), students), "jsonl", out, JAKARTA
    )
    _, events, _ = exported(out)
    wanted = [
        s
        for s in sent
        if start <= s.event.ts <= end and (s.event.student is None or s.event.student in students)
    ]
    assert per_attempt(events) == once_per_attempt(wanted)
    # The time index let the read skip the log before --from: fewer records read than written.
    assert summary.stats.read < len(sent)
    assert verify_file(out).ok


async def test_csv_and_html_for_people(
    settings: CommonSettings, audit: Settings, tmp_path: Path
) -> None:
    exam = unique("exam")
    sent = await write_log(settings, simulate(exam, students=4, steps=40, seed=11))
    unique_events = sum(len(ids) for ids in once_per_attempt(sent).values())

    csv_out = tmp_path / "exam.csv"
    await export(audit, Selection(exam), "csv", csv_out, JAKARTA)
    with csv_out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == unique_events
    first = rows[0]
    assert first["server_time"].endswith("+07:00") and first["client_time"].endswith("+07:00")

    html_out = tmp_path / "exam.html"
    summary = await export(audit, Selection(exam), "html", html_out, JAKARTA)
    assert summary.events == unique_events
    page = html_out.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    for student in ("s00000", "s00003"):
        assert f"Student {student}" in page
    assert "WIB" in page and "away" in page
    proctors = {s.event.source.id for s in sent if s.event.source.kind == "proctor"}
    assert proctors and all(f"proctor {p}" in page for p in proctors)


async def test_export_command_line_writes_a_verifiable_file(
    settings: CommonSettings, tmp_path: Path
) -> None:
    exam = unique("exam")
    await write_log(settings, simulate(exam, students=3, steps=10, seed=2))
    out = tmp_path / "cli.jsonl"
    env = os.environ | {
        "PROCTOR_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "PROCTOR_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
    }
    export_cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit",
        "--quiet",
        "export",
        "--exam",
        exam,
        "--out",
        str(out),
        "--tz",
        "Asia/Jakarta",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(export_cli.communicate(), scaled(60))
    assert export_cli.returncode == 0, stderr.decode()
    final = stdout.decode().split("final hash ")[1].split()[0]
    assert "records/s" in stderr.decode()
    verify_cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "audit",
        "verify",
        str(out),
        "--expect-final",
        final,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(verify_cli.communicate(), scaled(30))
    assert verify_cli.returncode == 0 and "intact" in stdout.decode()
