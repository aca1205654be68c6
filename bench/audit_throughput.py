"""How fast the audit tool streams an exam out of the log, and how much memory it needs.

Writes a simulated exam (``audit.sample_exam``: one event per student per 5 s step, with
resends, away episodes, offline verdicts and proctor actions) plus a smaller second exam
sharing the log, to a fresh topic; then runs ``python -m audit`` commands on it as child
processes and reports each one's wall time, records/s and peak RSS (``os.wait4`` rusage of
that child alone). Topics are deleted afterwards.

    .venv/bin/python bench/audit_throughput.py --students 3000 --steps 500
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from adapters.kafka_clients import durable_producer
from adapters.kafka_topics import delete_topics, ensure_topics
from adapters.settings import CommonSettings, KafkaSettings
from audit.sample_exam import simulate
from schemas.events import encode_event, log_key


async def write(
    kafka: KafkaSettings, exam: str, other: str, students: int, steps: int
) -> tuple[int, int, int]:
    producer = durable_producer(kafka, client_id="audit-bench", linger_ms=5)
    await producer.start()
    written = first_ts = last_ts = 0
    try:
        pending = []
        # Both exams run at the same time, so their events interleave in the log.
        merged = heapq.merge(
            simulate(exam, students=students, steps=steps, seed=1),
            simulate(other, students=max(1, students // 10), steps=steps, seed=2),
            key=lambda e: e.ts,
        )
        for event in merged:
            first_ts = first_ts or event.ts
            last_ts = max(last_ts, event.ts)
            pending.append(
                await producer.send(
                    kafka.events_topic,
                    encode_event(event),
                    key=log_key(event),
                    timestamp_ms=event.ts,
                )
            )
            written += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                print(f"\rwritten {written:,}", end="", file=sys.stderr, flush=True)
        await asyncio.gather(*pending)
        print(file=sys.stderr)
    finally:
        await producer.stop()
    return written, first_ts, last_ts


def run(name: str, args: list[str], env: dict[str, str]) -> dict[str, object]:
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "audit", "--quiet", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    # Read the pipes before waiting so a chatty child never blocks on a full pipe.
    stdout, stderr = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    summary = next((line for line in stderr.decode().splitlines() if "records/s" in line), "")
    rate = re.search(r"read ([\d,]+) records .* in ([\d.]+) s: ([\d,]+) records/s", summary)
    result: dict[str, object] = {
        "command": name,
        "exit": child.returncode,
        "wall_s": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    if rate:
        result |= {
            "records_read": int(rate[1].replace(",", "")),
            "read_s": float(rate[2]),
            "records_per_s": int(rate[3].replace(",", "")),
        }
    result["summary"] = summary.strip()
    if child.returncode not in (0, 1):
        result["stderr"] = stderr.decode()[-2000:]
    print(json.dumps(result), file=sys.stderr)
    _ = stdout
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=500, help="5 s steps (500 = 42 min)")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--keep", action="store_true", help="keep the topic (prints its name)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit_throughput.json"))
    args = parser.parse_args()

    base = CommonSettings()
    run_id = f"bench-audit-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings.for_run(
        run_id,
        bootstrap=base.kafka.bootstrap,
        events_partitions=args.partitions,
        deliveries_partitions=1,
    )
    await ensure_topics(kafka)
    try:
        exam, other = f"{run_id}-exam", f"{run_id}-other"
        started = time.perf_counter()
        written, first_ts, last_ts = await write(kafka, exam, other, args.students, args.steps)
        write_s = time.perf_counter() - started
        env = os.environ | {
            "PROCTOR_KAFKA__BOOTSTRAP": kafka.bootstrap,
            "PROCTOR_KAFKA__EVENTS_TOPIC": kafka.events_topic,
            "PROCTOR_DYNAMO__TABLE": f"{run_id}-absent",
        }
        middle = (first_ts + last_ts) // 2
        quarter = (last_ts - first_ts) // 4
        with tempfile.TemporaryDirectory() as tmp:
            runs = [
                run(
                    "export jsonl (whole exam)",
                    ["export", "--exam", exam, "--format", "jsonl", "--out", f"{tmp}/exam.jsonl"],
                    env,
                ),
                run("verify", ["verify", f"{tmp}/exam.jsonl"], env),
                run(
                    "export csv (whole exam)",
                    ["export", "--exam", exam, "--format", "csv", "--out", f"{tmp}/exam.csv"],
                    env,
                ),
                run(
                    "export jsonl (middle half, time index)",
                    [
                        "export",
                        "--exam",
                        exam,
                        "--from",
                        str(middle - quarter),
                        "--to",
                        str(middle + quarter),
                        "--format",
                        "jsonl",
                        "--out",
                        f"{tmp}/half.jsonl",
                    ],
                    env,
                ),
                run(
                    "at (middle)",
                    ["at", "--exam", exam, "--time", str(middle), "--format", "json"],
                    env,
                ),
                run(
                    "alerts (away 20 s)",
                    ["alerts", "--exam", exam, "--away-threshold-s", "20", "--format", "json"],
                    env,
                ),
            ]
            export_bytes = Path(f"{tmp}/exam.jsonl").stat().st_size
    finally:
        if not args.keep:
            await delete_topics(kafka)
    result = {
        "topic": kafka.events_topic,
        "exam": exam,
        "students": args.students,
        "steps": args.steps,
        "partitions": args.partitions,
        "events_in_log": written,
        "write_s": round(write_s, 1),
        "export_jsonl_mb": round(export_bytes / 2**20, 1),
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
