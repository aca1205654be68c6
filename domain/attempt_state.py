"""Folding the exam log into per-attempt state: the one reducer every view uses.

Pure and deterministic: the state depends only on the events and their offsets, never on
the clock, so the status service, each gateway's live exam view, and an auditor's replay
reach byte-identical states. Idempotent: an event at or below the state's ``seq`` or with
an id applied recently changes nothing, so replays and client resends are harmless.
"""

from __future__ import annotations

from schemas.events import (
    ExamEvent,
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
from schemas.views import AttemptState, StudentView

RECENT_IDS = 64

# Latest-state events: a resend that arrives after a newer one must not roll the row back.
_LATEST_WINS = (StudentStatus, StudentProgress)


def apply(state: AttemptState | None, event: ExamEvent, offset: int) -> AttemptState | None:
    """Return the attempt's state after ``event`` at log ``offset``.

    Returns ``state`` itself (the same object) when the event changes nothing, so callers
    can test ``new is old`` to skip writes and deliveries.
    """
    if event.attempt is None:
        return state
    if state is None:
        if event.student is None:
            # A proctor command for an attempt nobody has seen: nothing to show yet.
            return None
        state = AttemptState(
            view=StudentView(exam=event.exam, attempt=event.attempt, student=event.student)
        )
    view = state.view
    if offset <= view.seq or event.id in state.recent_ids or event.exam != view.exam:
        return state
    if (
        isinstance(event, _LATEST_WINS)
        and event.client_seq is not None
        and event.client_seq <= state.last_client_seq
    ):
        return state
    changes = _changes(view, event)
    if changes is None:
        return state
    last_client_seq = max(state.last_client_seq, event.client_seq or 0)
    changes.update(seq=offset, updated_at=event.ts, client_seq=last_client_seq)
    return AttemptState(
        view=view.model_copy(update=changes),
        last_client_seq=last_client_seq,
        recent_ids=(*state.recent_ids[-(RECENT_IDS - 1) :], event.id),
    )


def _changes(view: StudentView, event: ExamEvent) -> dict[str, object] | None:
    match event:
        case StudentConnected():
            return {
                "name": event.name or view.name,
                "attempt_no": event.attempt_no,
                "time_end": view.time_end if view.time_end is not None else event.time_end,
                "gateway": event.gateway,
                "started_at": view.started_at if view.started_at is not None else event.ts,
                **_online(view),
            }
        case StudentStatus(status="away"):
            if view.status == "away":
                return {}
            return {
                "status": "away",
                "away_count": view.away_count + 1,
                "away_since": event.ts,
                **_clear_offline(view),
            }
        case StudentStatus(status="active"):
            return {"status": "active", **_end_away(view, event.ts), **_clear_offline(view)}
        case StudentProgress():
            changes: dict[str, object] = {
                "question_current": event.question_current,
                "answered": event.answered,
                "total": event.total,
            }
            # The server's deadline (token, extensions, pauses) wins once known; a page's own
            # countdown only fills it in, so a page that missed an extension can't roll it back.
            if event.time_remaining_s is not None and view.time_end is None:
                changes["time_end"] = event.ts + event.time_remaining_s * 1000
            return changes
        case StudentAnswer():
            return {}
        case StudentSubmitted():
            return {"submitted": True, "score": event.score}
        case StudentOffline():
            if view.status == "offline":
                return None
            return {
                "status": "offline",
                "offline_since": event.since,
                "offline_reason": event.reason,
                "offline_count": view.offline_count + 1,
                "gateway": None,
                **_end_away(view, event.since),
            }
        case StudentBackOnline():
            return _online(view) if view.status == "offline" else None
        case ProctorPaused():
            return None if view.paused else {"paused": True, "paused_at": event.ts}
        case ProctorResumed():
            if not view.paused:
                return None
            paused_ms = event.ts - (view.paused_at or event.ts)
            time_end = None if view.time_end is None else view.time_end + paused_ms
            return {"paused": False, "paused_at": None, "time_end": time_end}
        case ProctorTimeExtended():
            time_end = None if view.time_end is None else view.time_end + event.seconds * 1000
            return {"extended_s": view.extended_s + event.seconds, "time_end": time_end}
        case _:
            # Messages, announcements and alerts are facts in the log, not state.
            return None


def _online(view: StudentView) -> dict[str, object]:
    if view.status != "offline":
        return {}
    return {"status": "active", **_clear_offline(view)}


def _clear_offline(view: StudentView) -> dict[str, object]:
    return {"offline_since": None, "offline_reason": None} if view.offline_since else {}


def _end_away(view: StudentView, ts: int) -> dict[str, object]:
    if view.away_since is None:
        return {}
    return {"away_since": None, "away_ms_total": view.away_ms_total + max(0, ts - view.away_since)}
