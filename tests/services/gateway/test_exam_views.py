"""ExamView: a gateway's live view of one exam and the gap-free snapshot handshake."""

from __future__ import annotations

from typing import Any, Literal

from domain.attempt_state import apply
from schemas.deliveries import ForProctors, WatchReady
from schemas.events import (
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    StudentAnswer,
    StudentConnected,
    StudentProgress,
    StudentStatus,
)
from schemas.views import AttemptState
from services.gateway.exam_views import Applied, ExamView

EXAM = "exam-1"
PARTITIONS = 3
STUDENT = EventSource(kind="student", id="stu", gateway=1)
PROCTOR = EventSource(kind="proctor", id="proc-1", gateway=2)


def who(attempt: str) -> dict[str, Any]:
    return {"exam": EXAM, "attempt": attempt, "student": f"stu-{attempt}"}


def connected(attempt: str, event_id: str) -> StudentConnected:
    return StudentConnected(
        **who(attempt), id=event_id, ts=1_000, source=STUDENT, conn=f"c-{attempt}", gateway=1
    )


def status(
    attempt: str, event_id: str, value: Literal["active", "away"], client_seq: int
) -> StudentStatus:
    return StudentStatus(
        **who(attempt), id=event_id, ts=2_000, client_seq=client_seq, source=STUDENT, status=value
    )


def progress(attempt: str, event_id: str, answered: int, client_seq: int) -> StudentProgress:
    return StudentProgress(
        **who(attempt),
        id=event_id,
        ts=3_000,
        client_seq=client_seq,
        source=STUDENT,
        answered=answered,
        total=10,
    )


def answer(attempt: str, event_id: str, client_seq: int) -> StudentAnswer:
    return StudentAnswer(
        **who(attempt),
        id=event_id,
        ts=4_000,
        client_seq=client_seq,
        source=STUDENT,
        question=1,
        answer="A",
    )


def message(attempt: str, event_id: str) -> ProctorMessage:
    return ProctorMessage(
        exam=EXAM, attempt=attempt, id=event_id, ts=5_000, source=PROCTOR, text="hello"
    )


def item(event: ExamEvent, offset: int, partition: int = 0) -> ForProctors:
    return ForProctors(exam=EXAM, partition=partition, offset=offset, event=event)


def fold(*items: ForProctors) -> dict[str, AttemptState]:
    """The status service's snapshot after these items: the same reducer, the same states."""
    states: dict[str, AttemptState] = {}
    for each in items:
        assert each.event.attempt is not None
        new = apply(states.get(each.event.attempt), each.event, each.offset)
        if new is not None:
            states[each.event.attempt] = new
    return states


def view(request: str = "req-1") -> ExamView:
    return ExamView(exam=EXAM, request=request, log_partitions=PARTITIONS)


def ready(positions: dict[int, int], request: str = "req-1") -> WatchReady:
    return WatchReady(exam=EXAM, request=request, positions=positions)


# -- syncing --------------------------------------------------------------------------------


def test_items_are_buffered_while_syncing() -> None:
    exam = view()
    first = item(connected("a1", "e1"), offset=10)

    assert exam.offer(first) is None
    assert exam.buffer == [first]
    assert not exam.live
    assert exam.rows() == []


def test_router_is_ready_once_watch_ready_covers_every_partition() -> None:
    exam = view()
    assert not exam.router_ready

    exam.on_ready(ready({0: 5, 1: -1}))  # one router worker owns partitions 0 and 1
    assert not exam.router_ready

    exam.on_ready(ready({2: 8}))  # another owns partition 2
    assert exam.router_ready
    assert exam.positions == {0: 5, 1: -1, 2: 8}


def test_a_stale_watch_ready_for_another_request_is_ignored() -> None:
    exam = view(request="req-2")
    exam.on_ready(ready({0: 5, 1: 5, 2: 5}, request="req-1"))

    assert not exam.router_ready
    assert exam.positions == {}


def test_snapshot_is_fresh_once_every_watermark_reaches_the_routers_position() -> None:
    exam = view()
    exam.on_ready(ready({0: 5, 1: -1, 2: 8}))

    assert exam.snapshot_fresh({0: 5, 1: 0, 2: 9})
    assert exam.snapshot_fresh({0: 5, 2: 8})  # partition 1: nothing routed, nothing needed
    assert not exam.snapshot_fresh({0: 4, 1: 0, 2: 9})
    assert not exam.snapshot_fresh({0: 5, 1: 0})  # partition 2 not written yet
    assert not exam.snapshot_fresh({})


# -- load -----------------------------------------------------------------------------------


def test_load_applies_only_buffered_items_above_each_attempts_seq() -> None:
    # a1's events at offsets 10 and 12 are in the snapshot; a2's at 20 (partition 1) too.
    in_snapshot = [
        item(connected("a1", "e1"), offset=10),
        item(status("a1", "e2", "away", 1), offset=12),
        item(connected("a2", "e3"), offset=20, partition=1),
    ]
    exam = view()
    # The router routed a1's offset 12 both before the watermark and into the buffer.
    exam.offer(in_snapshot[1])
    exam.offer(item(progress("a1", "e4", 3, 2), offset=13))
    exam.offer(item(status("a2", "e5", "away", 1), offset=21, partition=1))

    applied = exam.load(fold(*in_snapshot).values())

    assert exam.live and exam.buffer == []
    assert applied[0] == Applied(row=None, notable=None)
    assert applied[1].row is not None and (applied[1].row.attempt, applied[1].row.seq) == ("a1", 13)
    assert applied[1].row.answered == 3 and applied[1].row.status == "away"
    assert applied[2].row is not None and (applied[2].row.attempt, applied[2].row.seq) == ("a2", 21)
    assert {row.attempt: row.seq for row in exam.rows()} == {"a1": 13, "a2": 21}


def test_load_of_a_snapshot_newer_than_the_whole_buffer_changes_nothing() -> None:
    events = [item(connected("a1", "e1"), 10), item(status("a1", "e2", "away", 1), 11)]
    exam = view()
    for each in events:
        exam.offer(each)

    applied = exam.load(fold(*events).values())

    assert applied == [Applied(row=None, notable=None)] * 2
    assert exam.rows() == [state.view for state in fold(*events).values()]


def test_buffered_items_for_students_missing_from_the_snapshot_create_rows() -> None:
    exam = view()
    exam.offer(item(connected("a7", "e1"), offset=3))

    applied = exam.load([])

    assert applied[0].row is not None
    assert (applied[0].row.attempt, applied[0].row.student, applied[0].row.status) == (
        "a7",
        "stu-a7",
        "active",
    )


def test_the_live_view_matches_the_reducer_over_the_whole_log() -> None:
    log = [
        item(connected("a1", "e1"), 1),
        item(connected("a2", "e2"), 2),
        item(status("a1", "e3", "away", 1), 3),
        item(progress("a2", "e4", 5, 1), 4),
        item(status("a1", "e5", "active", 2), 5),
        item(answer("a2", "e6", 2), 6),
    ]
    exam = view()
    for each in log[2:]:  # the router's position was offset 2
        exam.offer(each)
    exam.load(fold(*log[:4]).values())  # the status service had reached offset 4

    assert {row.attempt: row for row in exam.rows()} == {
        attempt: state.view for attempt, state in fold(*log).items()
    }


# -- live -----------------------------------------------------------------------------------


def live_view(*snapshot: ForProctors) -> ExamView:
    exam = view()
    exam.load(fold(*snapshot).values())
    return exam


def test_once_live_items_apply_at_once() -> None:
    exam = live_view(item(connected("a1", "e1"), 10))

    applied = exam.offer(item(status("a1", "e2", "away", 1), 11))

    assert applied is not None and applied.row is not None
    assert (applied.row.status, applied.row.away_count, applied.row.seq) == ("away", 1, 11)
    assert applied.notable is None  # a status change is a row, not a timeline entry


def test_items_at_or_below_the_seq_give_nothing() -> None:
    first, second = item(connected("a1", "e1"), 10), item(status("a1", "e2", "away", 1), 11)
    exam = live_view(first, second)

    assert exam.offer(first) == Applied(row=None, notable=None)
    assert exam.offer(second) == Applied(row=None, notable=None)
    # A replay of an answer (a notable type) must not reappear on the timeline either.
    exam.offer(item(answer("a1", "e3", 2), 12))
    assert exam.offer(item(answer("a1", "e3", 2), 12)) == Applied(row=None, notable=None)


def test_a_resent_event_logged_twice_is_surfaced_once() -> None:
    # A client resends an event whose ack was lost: the log holds it twice, at two offsets.
    exam = live_view(item(connected("a1", "e1"), 10))
    first = exam.offer(item(answer("a1", "ans-1", 1), 11))
    again = exam.offer(item(answer("a1", "ans-1", 1), 15))

    assert first is not None and first.notable is not None
    assert again == Applied(row=None, notable=None)


def test_notable_events_are_surfaced_with_the_row_they_change() -> None:
    exam = live_view(item(connected("a1", "e1"), 10))

    applied = exam.offer(item(answer("a1", "e2", 1), 11))

    assert applied is not None
    assert applied.notable == answer("a1", "e2", 1)
    assert applied.row is not None and applied.row.seq == 11


def test_notable_events_that_change_no_state_are_still_surfaced() -> None:
    exam = live_view(item(connected("a1", "e1"), 10))

    applied = exam.offer(item(message("a1", "m1"), 11))

    assert applied == Applied(row=None, notable=message("a1", "m1"))


def test_exam_wide_events_are_timeline_entries_without_a_row() -> None:
    exam = live_view(item(connected("a1", "e1"), 10))
    announcement = ProctorAnnouncement(
        exam=EXAM, attempt=None, id="m2", ts=6_000, source=PROCTOR, text="Ten minutes left"
    )

    assert exam.offer(item(announcement, 3, partition=2)) == Applied(row=None, notable=announcement)
    assert [row.seq for row in exam.rows()] == [10]


def test_a_command_for_an_attempt_never_seen_is_a_timeline_entry_only() -> None:
    exam = live_view()

    applied = exam.offer(item(message("a9", "m1"), 4))

    assert applied == Applied(row=None, notable=message("a9", "m1"))
    assert exam.rows() == []


def test_a_late_status_resend_does_not_roll_the_row_back() -> None:
    exam = live_view(item(connected("a1", "e1"), 10))
    exam.offer(item(status("a1", "e3", "active", 3), 12))

    late = exam.offer(item(status("a1", "e2", "away", 2), 13))

    assert late == Applied(row=None, notable=None)
    assert [row.status for row in exam.rows()] == ["active"]
