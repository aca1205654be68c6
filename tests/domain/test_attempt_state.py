"""The reducer every view shares: what each event does, and that nothing applies twice."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from domain.attempt_state import RECENT_IDS, apply
from schemas.events import (
    EventSource,
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
from schemas.views import AttemptState

STUDENT = EventSource(kind="student", id="stu1")
PROCTOR = EventSource(kind="proctor", id="proc1")
NOTIFIER = EventSource(kind="notifier", id="notifier-0")
_ids = itertools.count()


def _common(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"ev{next(_ids)}",
        "exam": "exam1",
        "attempt": "att1",
        "student": "stu1",
        "ts": 1_000_000,
        "source": STUDENT,
    }
    base.update(fields)
    return base


def connected(**fields: Any) -> StudentConnected:
    return StudentConnected(**_common(conn="c1", gateway=3, name="Ada", **fields))


def fold(events: list[ExamEvent], start: int = 0) -> AttemptState:
    state: AttemptState | None = None
    for offset, event in enumerate(events, start=start):
        state = apply(state, event, offset)
    assert state is not None
    return state


def test_connect_creates_the_row_online() -> None:
    state = fold([connected(attempt_no=2, time_end=5_000_000)])
    view = state.view
    assert (view.exam, view.attempt, view.student, view.name) == ("exam1", "att1", "stu1", "Ada")
    assert view.status == "active"
    assert view.attempt_no == 2
    assert view.time_end == 5_000_000
    assert view.gateway == 3
    assert view.started_at == 1_000_000
    assert view.seq == 0
    assert view.updated_at == 1_000_000


def test_reconnect_keeps_start_time_and_deadline() -> None:
    state = fold(
        [
            connected(time_end=5_000_000),
            StudentOffline(
                **_common(source=NOTIFIER, ts=1_100_000), reason="closed", since=1_050_000
            ),
            connected(ts=1_200_000, time_end=9_999_999),
        ]
    )
    assert state.view.started_at == 1_000_000
    assert state.view.time_end == 5_000_000
    assert state.view.status == "active"
    assert state.view.offline_since is None
    assert state.view.offline_count == 1


def test_away_and_back_accumulates_away_time() -> None:
    state = fold(
        [
            connected(),
            StudentStatus(**_common(ts=1_010_000, client_seq=1), status="away"),
            StudentStatus(**_common(ts=1_015_000, client_seq=2), status="away"),
            StudentStatus(**_common(ts=1_040_000, client_seq=3), status="active"),
            StudentStatus(**_common(ts=1_050_000, client_seq=4), status="away"),
        ]
    )
    view = state.view
    assert view.status == "away"
    assert view.away_count == 2
    assert view.away_ms_total == 30_000
    assert view.away_since == 1_050_000
    assert view.client_seq == 4


def test_offline_ends_away_and_back_online_restores_active() -> None:
    state = fold(
        [
            connected(),
            StudentStatus(**_common(ts=1_010_000, client_seq=1), status="away"),
            StudentOffline(
                **_common(source=NOTIFIER, ts=1_030_000),
                reason="heartbeat_timeout",
                since=1_020_000,
            ),
        ]
    )
    view = state.view
    assert view.status == "offline"
    assert view.offline_reason == "heartbeat_timeout"
    assert view.offline_since == 1_020_000
    assert view.away_since is None
    assert view.away_ms_total == 10_000
    assert view.gateway is None
    back = apply(
        state,
        StudentBackOnline(
            **_common(source=NOTIFIER, ts=1_040_000), offline_ms=20_000, reason="closed"
        ),
        10,
    )
    assert back is not None
    assert back.view.status == "active"
    assert back.view.offline_since is None
    assert back.view.offline_reason is None
    assert back.view.offline_count == 1


def test_second_offline_and_back_online_when_online_change_nothing() -> None:
    state = fold(
        [
            connected(),
            StudentOffline(**_common(source=NOTIFIER), reason="gateway_lost", since=1_000_000),
        ]
    )
    again = StudentOffline(**_common(source=NOTIFIER), reason="closed", since=1_000_500)
    assert apply(state, again, 5) is state
    online = fold([connected()])
    back = StudentBackOnline(**_common(source=NOTIFIER), offline_ms=1, reason="closed")
    assert apply(online, back, 5) is online


def test_progress_sets_counts_and_deadline() -> None:
    state = fold(
        [
            connected(),
            StudentProgress(
                **_common(ts=2_000_000, client_seq=1),
                question_current=4,
                answered=3,
                total=10,
                time_remaining_s=600,
            ),
        ]
    )
    view = state.view
    assert (view.question_current, view.answered, view.total) == (4, 3, 10)
    assert view.time_end == 2_000_000 + 600_000


def test_submit_records_score() -> None:
    state = fold([connected(), StudentSubmitted(**_common(), score=87.5)])
    assert state.view.submitted is True
    assert state.view.score == 87.5


def test_answer_advances_seq_but_changes_no_field() -> None:
    before = fold([connected()])
    after = apply(before, StudentAnswer(**_common(client_seq=1), question=1, answer="B"), 7)
    assert after is not None and after is not before
    assert after.view.seq == 7
    assert after.view.model_dump(exclude={"seq", "client_seq"}) == before.view.model_dump(
        exclude={"seq", "client_seq"}
    )


def test_pause_freezes_deadline_and_resume_shifts_it_by_the_pause() -> None:
    state = fold(
        [
            connected(time_end=5_000_000),
            ProctorPaused(**_common(source=PROCTOR, ts=2_000_000), reason="fire drill"),
            # The client's clock keeps running while paused; the deadline must not follow it.
            StudentProgress(
                **_common(ts=2_100_000, client_seq=1), answered=1, total=10, time_remaining_s=1
            ),
            ProctorResumed(**_common(source=PROCTOR, ts=2_300_000)),
        ]
    )
    assert state.view.paused is False
    assert state.view.paused_at is None
    assert state.view.time_end == 5_000_000 + 300_000
    assert state.view.answered == 1


def test_pause_twice_and_resume_unpaused_change_nothing() -> None:
    paused = fold([connected(), ProctorPaused(**_common(source=PROCTOR))])
    assert apply(paused, ProctorPaused(**_common(source=PROCTOR)), 9) is paused
    running = fold([connected()])
    assert apply(running, ProctorResumed(**_common(source=PROCTOR)), 9) is running


def test_time_extension_moves_deadline_and_adds_up() -> None:
    state = fold(
        [
            connected(time_end=5_000_000),
            ProctorTimeExtended(**_common(source=PROCTOR), seconds=300),
            ProctorTimeExtended(**_common(source=PROCTOR), seconds=60),
        ]
    )
    assert state.view.extended_s == 360
    assert state.view.time_end == 5_000_000 + 360_000


def test_time_extension_without_deadline_counts_seconds_only() -> None:
    state = fold([connected(), ProctorTimeExtended(**_common(source=PROCTOR), seconds=120)])
    assert state.view.extended_s == 120
    assert state.view.time_end is None


@pytest.mark.parametrize(
    "event",
    [
        ProctorMessage(**_common(source=PROCTOR), text="eyes on screen"),
        ProctorAnnouncement(**_common(source=PROCTOR, attempt=None), text="10 minutes left"),
    ],
)
def test_messages_and_exam_wide_events_are_not_state(event: ExamEvent) -> None:
    state = fold([connected()])
    assert apply(state, event, 5) is state


def test_exam_wide_event_without_state_stays_none() -> None:
    event = ProctorAnnouncement(**_common(source=PROCTOR, attempt=None), text="hello")
    assert apply(None, event, 0) is None


def test_proctor_command_for_an_unseen_attempt_creates_nothing() -> None:
    event = ProctorMessage(**_common(source=PROCTOR, student=None), text="hi")
    assert apply(None, event, 0) is None


def test_replayed_offset_is_ignored() -> None:
    state = fold([connected(), StudentSubmitted(**_common(), score=1.0)], start=10)
    # Same event again at its old offset, and any event at or below seq.
    assert apply(state, StudentSubmitted(**_common(), score=99.0), 11) is state
    assert apply(state, StudentSubmitted(**_common(), score=99.0), 5) is state


def test_resent_event_id_is_ignored_at_a_new_offset() -> None:
    first = StudentStatus(**_common(client_seq=None), status="away")
    state = fold([connected(), first])
    assert apply(state, first, 50) is state


def test_only_the_last_ids_are_remembered() -> None:
    first = StudentAnswer(**_common(), question=0, answer="A")
    state = fold([connected(), first])
    for offset in range(2, 2 + RECENT_IDS):
        moved = apply(state, StudentAnswer(**_common(), question=offset, answer="x"), offset)
        assert moved is not None
        state = moved
    assert len(state.recent_ids) == RECENT_IDS
    assert first.id not in state.recent_ids


def test_late_resend_of_a_latest_state_event_does_not_roll_back() -> None:
    state = fold(
        [
            connected(),
            StudentStatus(**_common(client_seq=5), status="away"),
        ]
    )
    stale = StudentStatus(**_common(client_seq=4), status="active")
    assert apply(state, stale, 9) is state
    stale_progress = StudentProgress(**_common(client_seq=5), answered=1, total=2)
    assert apply(state, stale_progress, 9) is state


def test_event_of_another_exam_is_ignored() -> None:
    state = fold([connected()])
    other = StudentSubmitted(**_common(exam="exam2"), score=1.0)
    assert apply(state, other, 5) is state


def test_same_events_give_identical_states_on_replay() -> None:
    events: list[ExamEvent] = [
        connected(time_end=5_000_000),
        StudentStatus(**_common(ts=1_001_000, client_seq=1), status="away"),
        StudentStatus(**_common(ts=1_002_000, client_seq=2), status="active"),
        ProctorTimeExtended(**_common(source=PROCTOR), seconds=60),
        StudentSubmitted(**_common(), score=3.0),
    ]
    first = fold(events)
    # Replaying everything over the final state changes nothing; a rebuild is byte-identical.
    again = first
    for offset, event in enumerate(events):
        replayed = apply(again, event, offset)
        assert replayed is again
    assert fold(events).model_dump_json() == first.model_dump_json()
