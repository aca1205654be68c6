"""Per-student timelines: episodes follow the dashboard's status, entries name the actors."""

from __future__ import annotations

from audit.timeline import ExamTimeline
from schemas.events import (
    ProctorAnnouncement,
    ProctorMessage,
    StudentBackOnline,
    StudentConnected,
    StudentOffline,
    StudentProgress,
    StudentStatus,
    StudentSubmitted,
)
from tests.audit.support import NOTIFIER, PROCTOR, T0, ev


def test_episodes_with_durations_and_offline_reasons() -> None:
    timeline = ExamTimeline("e1")
    events = [
        ev(StudentConnected, 0, conn="c", gateway=0),
        ev(StudentStatus, 10, status="away", client_seq=1),
        ev(StudentStatus, 35, status="active", client_seq=2),
        ev(StudentOffline, 60, source=NOTIFIER, reason="heartbeat_timeout", since=T0 + 50_000),
        ev(StudentBackOnline, 80, source=NOTIFIER, offline_ms=30_000, reason="heartbeat_timeout"),
        ev(StudentSubmitted, 90, score=71.5),
    ]
    for offset, event in enumerate(events):
        timeline.feed(event, offset)
    [attempt] = timeline.students()
    shape = [(e.status, e.start - T0, e.duration_ms, e.reason) for e in attempt.episodes]
    assert shape == [
        ("active", 0, 10_000, None),
        ("away", 10_000, 25_000, None),
        ("active", 35_000, 15_000, None),
        ("offline", 50_000, 30_000, "heartbeat_timeout"),
        ("active", 80_000, None, None),
    ]
    assert [entry.kind for entry in attempt.entries] == [
        "student.connected",
        "student.offline",
        "student.back_online",
        "student.submitted",
    ]
    assert attempt.view is not None and attempt.view.score == 71.5


def test_late_resends_leave_no_trace_and_proctors_are_named() -> None:
    timeline = ExamTimeline("e1")
    events = [
        ev(StudentConnected, 0, conn="c", gateway=0),
        ev(StudentProgress, 5, client_seq=3, answered=3, total=10),
        ev(StudentProgress, 6, client_seq=2, answered=2, total=10),  # late: older counter
        ev(StudentStatus, 7, client_seq=1, status="away"),  # late as well
        ev(ProctorMessage, 8, source=PROCTOR, text="eyes on screen"),
        ev(ProctorAnnouncement, 9, source=PROCTOR, text="10 min left"),
    ]
    events[5] = events[5].model_copy(update={"attempt": None, "student": None})  # exam-wide
    for offset, event in enumerate(events):
        timeline.feed(event, offset)
    [attempt] = timeline.students()
    assert [e.status for e in attempt.episodes] == ["active"]
    assert [e.text for e in attempt.entries if e.kind == "student.progress"] == [
        "on question None, answered 3/10"
    ]
    [message] = [e for e in attempt.entries if e.kind == "proctor.message"]
    assert message.actor == "proctor proctor-7" and "eyes on screen" in message.text
    assert [e.text for e in timeline.exam_wide] == ["announcement: 10 min left"]
