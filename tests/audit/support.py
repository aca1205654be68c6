"""Event builders for the audit tool's tests."""

from __future__ import annotations

import itertools
from typing import Any

from schemas.events import EventSource, ExamEvent

T0 = 1_767_225_600_000
STUDENT = EventSource(kind="student", id="s1")
NOTIFIER = EventSource(kind="notifier", id="n")
PROCTOR = EventSource(kind="proctor", id="proctor-7")
_ids = itertools.count()


def ev(
    event_type: type[ExamEvent],
    at_s: float,
    *,
    attempt: str = "a1",
    student: str = "s1",
    **fields: Any,
) -> ExamEvent:
    base: dict[str, Any] = {
        "id": f"{attempt}-{next(_ids)}",
        "exam": "e1",
        "attempt": attempt,
        "student": student,
        "ts": T0 + round(at_s * 1000),
        "source": STUDENT,
    }
    return event_type.model_validate(base | fields)
