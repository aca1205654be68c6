"""The first-attempt rule and the coalescing buffer in front of DynamoDB."""

from __future__ import annotations

import itertools
import random

import pytest

from domain.first_attempt import FirstAttemptBuffer, supersedes
from schemas.views import StudentView


def view(
    attempt: str = "a1", seq: int = 0, attempt_no: int = 1, student: str = "s1"
) -> StudentView:
    return StudentView(exam="e1", attempt=attempt, student=student, seq=seq, attempt_no=attempt_no)


@pytest.mark.parametrize(
    ("candidate", "holder", "wins"),
    [
        (view(seq=3), None, True),
        (view(seq=5), view(seq=3), True),
        (view(seq=3), view(seq=3), False),  # replay / duplicate
        (view(seq=2), view(seq=3), False),  # older state of the same attempt
        (view("a2", seq=90, attempt_no=2), view(seq=3), False),  # later attempt never overwrites
        (view("a1", seq=1, attempt_no=1), view("a2", seq=90, attempt_no=2), True),  # earlier late
        (view("b1", seq=9, attempt_no=1), view("a1", seq=3, attempt_no=1), False),  # same number
    ],
)
def test_supersedes(candidate: StudentView, holder: StudentView | None, wins: bool) -> None:
    assert supersedes(candidate, holder) is wins


def _all_views() -> list[StudentView]:
    return [
        view(attempt, seq, attempt_no)
        for attempt, attempt_no in (("a1", 1), ("b1", 1), ("a2", 2), ("a3", 3))
        for seq in (1, 5, 9)
    ]


def test_rule_is_monotone_so_skipping_against_a_known_holder_is_safe() -> None:
    # If a candidate loses to a holder, it loses to anything that later replaces that holder.
    views = _all_views()
    for candidate, holder, later in itertools.product(views, repeat=3):
        if not supersedes(candidate, holder) and supersedes(later, holder):
            assert not supersedes(candidate, later), (candidate, holder, later)


def test_buffer_keeps_the_latest_state_per_item() -> None:
    buffer = FirstAttemptBuffer()
    for seq in (1, 2, 3):
        assert buffer.stage(view(seq=seq))
    buffer.stage(view(seq=1, student="s2"))
    drained = buffer.drain()
    assert [(v.student, v.seq) for v in drained] == [("s1", 3), ("s2", 1)]
    assert len(buffer) == 0
    assert buffer.drain() == []


def test_buffer_prefers_the_first_attempt_in_any_order() -> None:
    buffer = FirstAttemptBuffer()
    buffer.stage(view("a2", seq=50, attempt_no=2))
    buffer.stage(view("a1", seq=4, attempt_no=1))
    assert not buffer.stage(view("a2", seq=60, attempt_no=2))
    assert [(v.attempt, v.seq) for v in buffer.drain()] == [("a1", 4)]


def test_buffer_drops_updates_that_lose_to_the_known_holder() -> None:
    buffer = FirstAttemptBuffer()
    buffer.note_holder(view("a1", seq=10, attempt_no=1))
    assert not buffer.stage(view("a2", seq=20, attempt_no=2))
    assert not buffer.stage(view("a1", seq=10))
    assert buffer.stage(view("a1", seq=11))
    assert buffer.skipped == 2
    assert [v.seq for v in buffer.drain()] == [11]


def test_known_holder_only_moves_forward() -> None:
    buffer = FirstAttemptBuffer()
    buffer.note_holder(view(seq=10))
    buffer.note_holder(view(seq=4))  # a refusal carrying an older read must not regress it
    assert not buffer.stage(view(seq=8))


def test_restage_of_failed_writes_does_not_beat_newer_states() -> None:
    buffer = FirstAttemptBuffer()
    failed = [view(seq=3), view(seq=3, student="s2")]
    buffer.stage(view(seq=7))
    buffer.restage(failed)
    assert sorted((v.student, v.seq) for v in buffer.drain()) == [("s1", 7), ("s2", 3)]
    assert buffer.skipped == 0


def test_holder_memo_is_bounded() -> None:
    buffer = FirstAttemptBuffer(memo_size=2)
    for student in ("s1", "s2", "s3"):
        buffer.note_holder(view(seq=10, student=student))
    # s1 was forgotten: its stale update is staged again (the store's condition refuses it).
    assert buffer.stage(view(seq=5, student="s1"))
    assert not buffer.stage(view(seq=5, student="s3"))


def test_partial_drain_takes_the_oldest_items_first() -> None:
    buffer = FirstAttemptBuffer()
    for student in ("s1", "s2", "s3"):
        buffer.stage(view(seq=1, student=student), (0, 10))
    buffer.stage(view(seq=2, student="s1"), (0, 11))  # a newer state keeps s1's place
    assert [(v.student, v.seq) for v in buffer.drain(2)] == [("s1", 2), ("s2", 1)]
    assert [v.student for v in buffer.drain(5)] == ["s3"]
    assert buffer.drain(0) == [] and len(buffer) == 0


def test_floor_holds_the_log_at_the_oldest_unwritten_change() -> None:
    buffer = FirstAttemptBuffer()
    buffer.stage(view(seq=1, student="s1"), (0, 10))
    buffer.stage(view(seq=2, student="s1"), (0, 15))
    buffer.stage(view(seq=1, student="s2"), (0, 12))
    buffer.stage(view(seq=1, student="s3"), (1, 40))
    assert buffer.floor() == {0: 10, 1: 40}
    in_flight = buffer.drain(1)  # s1, staged since offset 10
    assert buffer.floor() == {0: 10, 1: 40}  # not written yet
    buffer.landed(in_flight)
    assert buffer.floor() == {0: 12, 1: 40}
    buffer.landed(buffer.drain())
    assert buffer.floor() == {}


def test_restaged_failure_keeps_its_position_even_behind_a_newer_state() -> None:
    buffer = FirstAttemptBuffer()
    buffer.stage(view(seq=1), (0, 10))
    failed = buffer.drain()
    buffer.stage(view(seq=5), (0, 30))  # newer state staged while the write was in flight
    buffer.restage(failed)
    assert buffer.floor() == {0: 10}
    assert [v.seq for v in buffer.drain()] == [5]


def test_an_item_changed_on_two_partitions_holds_both() -> None:
    buffer = FirstAttemptBuffer()
    buffer.stage(view("a2", seq=3, attempt_no=2), (4, 100))
    buffer.stage(view("a1", seq=2, attempt_no=1), (7, 50))
    assert buffer.floor() == {4: 100, 7: 50}
    buffer.forget_partitions({7})
    assert buffer.floor() == {4: 100}
    assert len(buffer) == 1  # the view itself is still written


def test_a_submitted_state_jumps_the_line() -> None:
    buffer = FirstAttemptBuffer()
    for student in ("s1", "s2", "s3"):
        buffer.stage(view(seq=1, student=student), (0, 10))
    buffer.stage(view(seq=2, student="s3").model_copy(update={"submitted": True}), (0, 20))
    assert [(v.student, v.submitted) for v in buffer.drain(1)] == [("s3", True)]
    assert buffer.floor() == {0: 10}  # the others still hold the log


def test_restage_of_a_write_that_already_landed_releases_its_position() -> None:
    buffer = FirstAttemptBuffer()
    buffer.stage(view(seq=3), (0, 10))
    in_flight = buffer.drain()
    buffer.note_holder(view(seq=3))  # the store answered before the flush was cancelled
    buffer.restage(in_flight)
    assert buffer.floor() == {}
    assert len(buffer) == 0


def _floor_by_scanning(buffer: FirstAttemptBuffer) -> dict[int, int]:
    """The commit floor the slow, obvious way: the minimum over every waiting position."""
    lowest: dict[int, int] = {}
    for positions in (*buffer._since.values(), *buffer._in_flight.values()):
        for partition, offset in positions.items():
            lowest[partition] = min(offset, lowest.get(partition, offset))
    return lowest


@pytest.mark.parametrize("seed", range(20))
def test_the_kept_floor_equals_the_minimum_over_every_waiting_change(seed: int) -> None:
    rng = random.Random(seed)
    buffer = FirstAttemptBuffer(memo_size=8)
    offsets = {p: itertools.count(rng.randrange(100)) for p in range(3)}
    flying: list[StudentView] = []
    seqs = itertools.count(1)
    for _ in range(600):
        roll = rng.random()
        if roll < 0.55:
            partition = rng.randrange(3)
            student = f"s{rng.randrange(12)}"
            attempt = rng.choice(["a", "b"])
            candidate = view(attempt, next(seqs), 1 + (attempt == "b"), student)
            buffer.stage(candidate, (partition, next(offsets[partition])))
        elif roll < 0.7:
            flying.extend(buffer.drain(rng.randrange(4)))
        elif roll < 0.8 and flying:
            done = rng.sample(flying, rng.randrange(len(flying) + 1))
            buffer.landed(done)
            for landed in done:
                buffer.note_holder(landed)
            flying = [v for v in flying if v not in done]
        elif roll < 0.9 and flying:
            buffer.restage(flying)
            flying = []
        elif roll < 0.93:
            buffer.forget_partitions({rng.randrange(3)})
        assert buffer.floor() == _floor_by_scanning(buffer)
