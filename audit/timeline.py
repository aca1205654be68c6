"""Per-student timelines for people: status episodes and everything that happened, in order.

Episodes follow the dashboard exactly: each event goes through the one reducer and an
episode starts whenever the status it shows changes (an offline episode starts when the
student was last seen, the offline verdict's ``since``). Late resends that the reducer
drops change nothing here either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.attempt_state import apply
from schemas.events import (
    AlertRaised,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    ProctorPaused,
    ProctorResumed,
    ProctorTimeExtended,
    StudentAnswer,
    StudentBackOnline,
    StudentConnected,
    StudentOffline,
    StudentProgress,
    StudentStatus,
    StudentSubmitted,
)
from schemas.views import AttemptState, LiveStatus, StudentView


@dataclass
class Episode:
    status: LiveStatus
    start: int
    end: int | None = None
    reason: str | None = None

    @property
    def duration_ms(self) -> int | None:
        return None if self.end is None else max(0, self.end - self.start)


@dataclass(frozen=True)
class Entry:
    ts: int
    client_ts: int | None
    kind: str
    text: str
    actor: str  # "student", "proctor <id>", "notifier" ...
    offset: int


@dataclass
class AttemptTimeline:
    exam: str
    attempt: str
    student: str
    state: AttemptState | None = None
    episodes: list[Episode] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    @property
    def view(self) -> StudentView | None:
        return None if self.state is None else self.state.view


@dataclass
class ExamTimeline:
    exam: str
    attempts: dict[str, AttemptTimeline] = field(default_factory=dict)
    exam_wide: list[Entry] = field(default_factory=list)

    def feed(self, event: ExamEvent, offset: int) -> None:
        entry = _entry(event, offset)
        if event.attempt is None:
            if entry is not None:
                self.exam_wide.append(entry)
            return
        timeline = self.attempts.get(event.attempt)
        if timeline is None:
            if event.student is None:
                return  # a command for an attempt never seen: nothing to attach it to
            timeline = self.attempts[event.attempt] = AttemptTimeline(
                event.exam, event.attempt, event.student
            )
        old = timeline.state
        new = apply(old, event, offset)
        if new is None:
            return
        if new is old and isinstance(event, StudentStatus | StudentProgress):
            return  # a late resend: the dashboard never showed it
        timeline.state = new
        _track_episode(timeline, old, new, event)
        if entry is not None:
            timeline.entries.append(entry)

    def students(self) -> list[AttemptTimeline]:
        return sorted(
            self.attempts.values(),
            key=lambda t: (t.student, t.view.attempt_no if t.view else 0, t.attempt),
        )


def _track_episode(
    timeline: AttemptTimeline, old: AttemptState | None, new: AttemptState, event: ExamEvent
) -> None:
    status = new.view.status
    episodes = timeline.episodes
    if old is not None and episodes and episodes[-1].status == status:
        return
    if old is None and status == "offline":
        return  # no connection seen yet: nothing to show
    start = event.ts
    reason: str | None = None
    if status == "offline":
        start = new.view.offline_since if new.view.offline_since is not None else event.ts
        reason = new.view.offline_reason
    if episodes and episodes[-1].end is None:
        episodes[-1].end = max(episodes[-1].start, start)
    episodes.append(Episode(status, start, reason=reason))


def _entry(event: ExamEvent, offset: int) -> Entry | None:
    text = _describe(event)
    if text is None:
        return None
    source = event.source
    actor = source.kind if source.kind in ("student", "notifier") else f"{source.kind} {source.id}"
    return Entry(event.ts, event.client_ts, event.type, text, actor, offset)


def _describe(event: ExamEvent) -> str | None:
    match event:
        case StudentConnected():
            deadline = "" if event.time_end is None else " (deadline set)"
            return f"connected: attempt {event.attempt_no}, gateway {event.gateway}{deadline}"
        case StudentStatus():
            return None  # shown as episodes
        case StudentProgress():
            remaining = (
                "" if event.time_remaining_s is None else f", {event.time_remaining_s} s left"
            )
            return (
                f"on question {event.question_current}, answered {event.answered}"
                f"/{event.total}{remaining}"
            )
        case StudentAnswer():
            return f"answered question {event.question}: {event.answer}"
        case StudentSubmitted():
            return f"submitted; score {event.score}" if event.score is not None else "submitted"
        case StudentOffline():
            return f"offline ({event.reason})"
        case StudentBackOnline():
            return f"back online after {event.offline_ms / 1000:.1f} s ({event.reason})"
        case ProctorMessage():
            return f"message: {event.text}"
        case ProctorAnnouncement():
            return f"announcement: {event.text}"
        case ProctorPaused():
            return f"paused{': ' + event.reason if event.reason else ''}"
        case ProctorResumed():
            return "resumed"
        case ProctorTimeExtended():
            return f"time extended by {event.seconds} s"
        case AlertRaised():
            return f"alert {event.kind}: {event.detail}"
    return None
