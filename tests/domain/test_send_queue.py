"""SendQueue: ordered frames, bounded; student rows coalesced to the newest by seq."""

from __future__ import annotations

import pytest

from domain.send_queue import QueueOverflow, SendQueue
from schemas.views import StudentView


def row(attempt: str, seq: int, *, exam: str = "exam-1", answered: int = 0) -> StudentView:
    return StudentView(
        exam=exam, attempt=attempt, student=f"stu-{attempt}", seq=seq, answered=answered
    )


def test_an_empty_queue_drains_to_nothing() -> None:
    queue = SendQueue(max_frames=4)

    assert len(queue) == 0
    assert queue.drain() == ([], {})


def test_frames_drain_in_the_order_they_were_put() -> None:
    queue = SendQueue(max_frames=10)
    for frame in (b"ack-1", b"error-2", b"snapshot-3"):
        queue.put_frame(frame)

    assert queue.drain() == ([b"ack-1", b"error-2", b"snapshot-3"], {})
    assert len(queue) == 0


def test_a_newer_row_replaces_the_pending_one() -> None:
    queue = SendQueue(max_frames=10)
    queue.put_update(row("a1", seq=5, answered=1))
    queue.put_update(row("a1", seq=9, answered=2))

    assert len(queue) == 1
    assert queue.coalesced == 1
    assert queue.drain() == ([], {"exam-1": [row("a1", seq=9, answered=2)]})


@pytest.mark.parametrize("older_seq", [8, 9])
def test_an_older_or_same_seq_row_is_ignored(older_seq: int) -> None:
    queue = SendQueue(max_frames=10)
    queue.put_update(row("a1", seq=9, answered=2))
    queue.put_update(row("a1", seq=older_seq, answered=1))

    assert queue.coalesced == 0
    assert queue.drain()[1] == {"exam-1": [row("a1", seq=9, answered=2)]}


def test_rows_are_kept_per_student_and_per_exam() -> None:
    queue = SendQueue(max_frames=10)
    queue.put_update(row("a1", seq=1))
    queue.put_update(row("a2", seq=2))
    queue.put_update(row("b1", seq=3, exam="exam-2"))
    queue.put_update(row("a1", seq=4))

    frames, updates = queue.drain()

    assert frames == []
    assert {exam: sorted((v.attempt, v.seq) for v in rows) for exam, rows in updates.items()} == {
        "exam-1": [("a1", 4), ("a2", 2)],
        "exam-2": [("b1", 3)],
    }


def test_coalescing_bounds_rows_by_students_not_by_updates() -> None:
    queue = SendQueue(max_frames=1)
    for seq in range(10_000):
        queue.put_update(row(f"a{seq % 50}", seq=seq))

    assert len(queue) == 50
    assert queue.coalesced == 10_000 - 50


def test_ordered_frames_are_bounded() -> None:
    queue = SendQueue(max_frames=3)
    for i in range(3):
        queue.put_frame(f"f{i}".encode())

    with pytest.raises(QueueOverflow):
        queue.put_frame(b"one too many")
    assert queue.drain()[0] == [b"f0", b"f1", b"f2"]


def test_rows_do_not_count_against_the_frame_bound() -> None:
    queue = SendQueue(max_frames=1)
    for i in range(20):
        queue.put_update(row(f"a{i}", seq=i))

    queue.put_frame(b"ack")
    assert len(queue) == 21


def test_draining_makes_room_again() -> None:
    queue = SendQueue(max_frames=1)
    queue.put_frame(b"first")
    queue.drain()

    queue.put_frame(b"second")
    assert queue.drain()[0] == [b"second"]


def test_drain_gives_frames_then_rows_and_empties_the_queue() -> None:
    queue = SendQueue(max_frames=5)
    queue.put_update(row("a1", seq=1))
    queue.put_frame(b"ack")
    queue.put_update(row("a2", seq=2))

    frames, updates = queue.drain()

    assert frames == [b"ack"]
    assert [v.attempt for v in updates["exam-1"]] == ["a1", "a2"]
    assert queue.drain() == ([], {})


def test_drop_exam_discards_only_that_exams_rows() -> None:
    queue = SendQueue(max_frames=5)
    queue.put_frame(b"unsubscribed")
    queue.put_update(row("a1", seq=1))
    queue.put_update(row("b1", seq=2, exam="exam-2"))

    queue.drop_exam("exam-1")

    assert queue.drain() == ([b"unsubscribed"], {"exam-2": [row("b1", seq=2, exam="exam-2")]})


def test_drop_exam_of_an_unknown_exam_is_harmless() -> None:
    queue = SendQueue(max_frames=5)
    queue.put_update(row("a1", seq=1))

    queue.drop_exam("exam-9")

    assert len(queue) == 1
