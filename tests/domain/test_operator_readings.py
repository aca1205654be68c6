"""Readings the services export for operators: how far a reader got, how long the oldest
DynamoDB write has waited, who is connected per exam."""

from __future__ import annotations

from domain.first_attempt import FirstAttemptBuffer
from domain.offsets import OffsetLedger
from schemas.views import StudentView
from tests.domain.test_liveness import T0, Gateway, run, started, tick


def test_positions_are_where_reading_got_to_on_assigned_partitions_only() -> None:
    ledger = OffsetLedger()
    ledger.assign([0, 1, 2])
    assert ledger.positions() == {}
    ledger.take({0: (10, 19), 1: (5, 5), 3: (0, 4)})
    assert ledger.positions() == {0: 20, 1: 6}
    ledger.revoked([1])
    assert ledger.positions() == {0: 20}


def view(student: str, seq: int) -> StudentView:
    return StudentView(exam="e1", attempt=f"a-{student}", student=student, seq=seq)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backlog_age_counts_from_an_items_first_change_until_it_is_written() -> None:
    clock = Clock()
    buffer = FirstAttemptBuffer(clock=clock)
    assert buffer.oldest_wait_s() == 0.0
    buffer.stage(view("s1", 1))
    clock.now = 103.0
    buffer.stage(view("s1", 2))  # coalesced: still as old as its first change
    buffer.stage(view("s2", 1))
    clock.now = 110.0
    assert buffer.oldest_wait_s() == 10.0
    flying = buffer.drain(1)
    assert [v.student for v in flying] == ["s1"]
    assert buffer.oldest_wait_s() == 10.0  # in flight is not written yet
    buffer.restage(flying)  # the write failed: it keeps its age
    assert buffer.oldest_wait_s() == 10.0
    buffer.landed(buffer.drain())
    assert buffer.oldest_wait_s() == 0.0


def test_connected_students_are_counted_per_exam_while_their_gateway_lives() -> None:
    t, gw = started()
    other = Gateway(t, slot=1, instance="gw-b")
    other.up(T0)
    gw.connect("a1", "c1", T0 + 10)
    gw.connect("a2", "c2", T0 + 10)
    other.connect("a3", "c3", T0 + 10)
    tick(t, T0 + 20)
    assert t.connected_by_exam() == {"e1": 3}
    gw.disconnect("a1", "c1", T0 + 30, "client_closed")
    tick(t, T0 + 40)
    assert t.connected_by_exam() == {"e1": 2}


def test_students_of_a_lost_gateway_are_not_counted_connected() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    gw.connect("a2", "c2", T0, interval_s=1.0)
    run(t, gw, T0, T0 + 2_000, {"a1": 1_000, "a2": 1_000})
    assert t.connected_by_exam() == {"e1": 2}
    for now in range(T0 + 2_200, T0 + 6_000, 200):  # the gateway died after T0 + 2 s
        tick(t, now)
    assert t.connected_by_exam() == {}
