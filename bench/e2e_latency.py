"""Student-to-proctor delivery latency through the whole system, two gateways.

Students connect to gateway 0, proctors to gateway 1, so every update crosses
gateway -> Kafka log -> router -> deliveries -> other gateway -> proctor. Latency is the
proctor's receive time minus the student's send time of the same update (matched by the
student's client seq; one clock, one machine). Every sent update is classified: seen,
superseded (a newer state of that student arrived instead: coalescing, by design) or lost
(nothing at or after it ever arrived).

    .venv/bin/python -m bench.e2e_latency --students 100 --rate 1 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from simulator.accounting import Receipt, json_safe
from simulator.accounting import account as delivery_account
from simulator.clients import ProctorBot, StudentBot, client_session
from simulator.system import ROOT, SECRET, bench_system


def account(students: list[StudentBot], proctors: list[ProctorBot]) -> dict[str, Any]:
    """ProctorBot already drops duplicate and stale rows; the classification is shared."""
    sent = {student.attempt: student.sent_at for student in students}
    attempts = [student.attempt for student in students]
    receipts = {
        str(n): [
            Receipt(got.attempt, got.seq, got.client_seq, got.at_ms, got.written_ms)
            for got in proctor.received
        ]
        for n, proctor in enumerate(proctors)
    }
    report = delivery_account(sent, receipts, {name: attempts for name in receipts})
    result: dict[str, Any] = json_safe(report.to_json())
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_system("bench") as cluster:
        codec = TokenCodec(SECRET)
        exam = "bench-exam"
        async with client_session() as http:
            proctors = []
            for n in range(args.proctors):
                token = codec.issue(ProctorIdentity(role="proctor", sub=f"p{n}", exams=(exam,)))
                proctor = ProctorBot(cluster.gateway_url(1), token)
                await proctor.connect(http)
                await proctor.watch(exam)
                proctors.append(proctor)
            students = []
            for n in range(args.students):
                attempt = f"a{n:05d}"
                token = codec.issue(
                    StudentIdentity(role="student", sub=f"s{n:05d}", exam=exam, attempt=attempt)
                )
                student = StudentBot(cluster.gateway_url(0), token, attempt)
                await student.connect(http)
                students.append(student)
            await asyncio.sleep(2)  # let connection events settle before measuring

            async def drive(student: StudentBot, rng: random.Random) -> None:
                await asyncio.sleep(rng.uniform(0, 1 / args.rate))
                deadline = time.monotonic() + args.duration
                while time.monotonic() < deadline:
                    await student.step(rng)
                    await asyncio.sleep(rng.uniform(0.8, 1.2) / args.rate)

            started = time.monotonic()
            await asyncio.gather(*(drive(s, random.Random(i)) for i, s in enumerate(students)))
            await asyncio.sleep(3)  # drain
            elapsed = time.monotonic() - started
            result = account(students, proctors)
            sent = sum(len(s.sent_at) for s in students)
            unacked = sum(len(s.unacked) for s in students)
            bots: list[StudentBot | ProctorBot] = [*students, *proctors]
            for bot in bots:
                await bot.close()
    return {
        "scenario": "e2e_latency",
        "students": args.students,
        "proctors": args.proctors,
        "updates_per_student_per_s": args.rate,
        "duration_s": args.duration,
        "updates_sent": sent,
        "updates_per_s": round(sent / elapsed, 1),
        "unacknowledged_at_end": unacked,
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="student-to-proctor latency, two gateways")
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--proctors", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1.0, help="updates per student per second")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e_latency.json")
    result = asyncio.run(run(parser.parse_args()))
    text = json.dumps(result, indent=2)
    print(text)
    out: Path = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
