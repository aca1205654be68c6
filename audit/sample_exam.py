"""A synthetic exam log, as gateways and the notifier would write it: tests, benchmarks, demos.

Deterministic for a seed. Events come in server-time order, one per student per step
(about what a real exam makes: a status or progress update every few seconds), with the
things an audit must cope with: away episodes, offline verdicts and reconnects, answers,
proctor messages and time extensions, exam-wide announcements, client resends of an event
already written (same id), and a submission at the end.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from schemas.events import (
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    ProctorTimeExtended,
    StudentAnswer,
    StudentBackOnline,
    StudentConnected,
    StudentOffline,
    StudentProgress,
    StudentStatus,
    StudentSubmitted,
)

QUESTIONS = 40
NOTIFIER = EventSource(kind="notifier", id="notifier-0")


@dataclass
class _Student:
    student: str
    attempt: str
    source: EventSource
    client_seq: int = 0
    question: int = 1
    answered: int = 0
    away: bool = False
    offline_since: int | None = None
    last: ExamEvent | None = None
    counter: int = 0


def simulate(
    exam: str,
    *,
    students: int,
    steps: int,
    step_ms: int = 5000,
    start_ms: int = 1_767_225_600_000,
    seed: int = 1,
    deadline_s: int = 3 * 3600,
) -> Iterator[ExamEvent]:
    """``students`` x ``steps`` events (plus reconnects and a few announcements), ts-ordered."""
    rng = random.Random(seed)
    roster = [
        _Student(f"s{n:05d}", f"{exam}-att-{n:05d}", EventSource(kind="student", id=f"s{n:05d}"))
        for n in range(students)
    ]
    slot_ms = max(1, step_ms // max(1, students))
    for step in range(steps):
        base = start_ms + step * step_ms
        if step and step % 120 == 0:
            yield ProctorAnnouncement(
                id=f"{exam}-ann-{step}",
                exam=exam,
                ts=base,
                source=EventSource(kind="proctor", id="proctor-1"),
                text=f"{step} steps in",
            )
        for n, s in enumerate(roster):
            ts = base + n * slot_ms + 1
            yield from _step(exam, s, step, steps, ts, rng, deadline_s, start_ms)


def _step(
    exam: str,
    s: _Student,
    step: int,
    steps: int,
    ts: int,
    rng: random.Random,
    deadline_s: int,
    start_ms: int,
) -> Iterator[ExamEvent]:
    common = {"exam": exam, "attempt": s.attempt, "student": s.student, "ts": ts}
    if step == 0:
        yield _student(
            s,
            StudentConnected,
            common,
            name=f"Student {s.student}",
            time_end=start_ms + deadline_s * 1000,
            conn=f"c-{s.student}-0",
            gateway=0,
        )
        return
    if s.offline_since is not None:
        s.counter += 1
        yield _student(s, StudentConnected, common, conn=f"c-{s.student}-{s.counter}", gateway=1)
        yield StudentBackOnline(
            id=f"{s.attempt}-back-{ts}",
            source=NOTIFIER,
            offline_ms=ts - s.offline_since,
            reason="heartbeat_timeout",
            **common,
        )
        s.offline_since = None
        return
    if step == steps - 1:
        yield _student(s, StudentSubmitted, common, score=round(100 * s.answered / QUESTIONS, 1))
        return
    roll = rng.random()
    if roll < 0.01 and s.last is not None:
        yield s.last  # a client resend after a reconnect: same id, written again
    elif roll < 0.015:
        s.offline_since = ts - 3000
        yield StudentOffline(
            id=f"{s.attempt}-off-{ts}",
            source=NOTIFIER,
            reason="heartbeat_timeout",
            since=s.offline_since,
            **common,
        )
    elif roll < 0.02:
        yield ProctorMessage(
            id=f"{s.attempt}-msg-{ts}",
            source=EventSource(kind="proctor", id="proctor-2"),
            text="please keep your eyes on the screen",
            **common,
        )
    elif roll < 0.021:
        yield ProctorTimeExtended(
            id=f"{s.attempt}-ext-{ts}",
            source=EventSource(kind="proctor", id="proctor-1"),
            seconds=300,
            **common,
        )
    elif s.away and roll < 0.35 or not s.away and roll < 0.06:
        # Away episodes last a few steps: some longer than 20 s, fewer longer than 30 s.
        s.away = not s.away
        yield _student(s, StudentStatus, common, status="away" if s.away else "active")
    elif roll < 0.3 and s.answered < QUESTIONS:
        s.answered += 1
        yield _student(s, StudentAnswer, common, question=s.question, answer=rng.choice("ABCD"))
    else:
        s.question = min(QUESTIONS, s.answered + 1)
        yield _student(
            s,
            StudentProgress,
            common,
            question_current=s.question,
            answered=s.answered,
            total=QUESTIONS,
        )


def _student(
    s: _Student, kind: type[ExamEvent], common: dict[str, object], **fields: object
) -> ExamEvent:
    s.client_seq += 1
    event = kind.model_validate(
        common
        | fields
        | {
            "id": f"{s.attempt}-{s.client_seq}",
            "client_seq": s.client_seq,
            "source": s.source,
            "client_ts": int(common["ts"]) - 40,  # type: ignore[call-overload]
        }
    )
    s.last = event
    return event
