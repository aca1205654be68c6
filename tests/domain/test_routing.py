"""Routing decisions: presence in, target slots and delivery items out."""

from __future__ import annotations

import orjson
import pytest

from domain.routing import (
    BadEvent,
    EventHead,
    PartitionPositions,
    RoutingTable,
    Targets,
    WatchStarted,
)
from schemas.deliveries import ForProctors, ForStudents, WatchReady
from schemas.events import (
    AlertRaised,
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    ProctorPaused,
    ProctorResumed,
    ProctorTimeExtended,
    StudentStatus,
    encode_event,
)
from schemas.presence import (
    AttemptLiveness,
    ExamWatch,
    GatewayUp,
    StudentConnection,
    StudentDisconnection,
    connection_key,
    gateway_key,
    liveness_key,
    watch_key,
)


def gateway_up(table: RoutingTable, slot: int, instance: str) -> None:
    record = GatewayUp(slot=slot, instance=instance, started_at=1, heartbeat_interval_s=5.0)
    assert table.apply(gateway_key(slot), record) == []


def watch(
    table: RoutingTable, slot: int, exam: str, request: str = "r1", instance: str = "i1"
) -> list[WatchStarted]:
    record = ExamWatch(slot=slot, instance=instance, exam=exam, request=request)
    return table.apply(watch_key(slot, exam), record)


def unwatch(table: RoutingTable, slot: int, exam: str) -> None:
    assert table.apply(watch_key(slot, exam), None) == []


def connect(
    table: RoutingTable, conn: str, slot: int, attempt: str, exam: str = "e1", instance: str = "i1"
) -> None:
    record = StudentConnection(
        conn=conn,
        slot=slot,
        instance=instance,
        exam=exam,
        attempt=attempt,
        student=f"s-{attempt}",
        opened_at=1,
        heartbeat_interval_s=5.0,
    )
    assert table.apply(connection_key(conn), record) == []


def disconnect(
    table: RoutingTable, conn: str, slot: int, attempt: str, exam: str = "e1", instance: str = "i1"
) -> None:
    record = StudentDisconnection(
        conn=conn,
        slot=slot,
        instance=instance,
        exam=exam,
        attempt=attempt,
        student=f"s-{attempt}",
        closed_at=2,
        reason="client_closed",
    )
    assert table.apply(connection_key(conn), record) == []


_PROCTOR = EventSource(kind="proctor", id="p1")
_STUDENT = EventSource(kind="student", id="s1")


def status(exam: str = "e1", attempt: str = "a1") -> StudentStatus:
    return StudentStatus(
        id="ev1", exam=exam, attempt=attempt, student="s1", ts=1, source=_STUDENT, status="away"
    )


def message(exam: str = "e1", attempt: str = "a1") -> ProctorMessage:
    return ProctorMessage(id="m1", exam=exam, attempt=attempt, ts=1, source=_PROCTOR, text="hi")


def announcement(exam: str = "e1") -> ProctorAnnouncement:
    return ProctorAnnouncement(id="an1", exam=exam, attempt=None, ts=1, source=_PROCTOR, text="hi")


def head(event: ExamEvent) -> EventHead:
    return EventHead.of(event)


# -- watches -------------------------------------------------------------------------------


def test_no_watch_routes_nothing() -> None:
    table = RoutingTable()
    assert table.targets(head(status())) == Targets()
    assert table.route(status(), 0, 5) == {}


def test_watch_routes_exam_events_to_watching_slots_only() -> None:
    table = RoutingTable()
    assert watch(table, 2, "e1", request="r9") == [WatchStarted(2, "e1", "r9")]
    watch(table, 0, "e1")
    watch(table, 1, "e2")

    assert table.targets(head(status("e1"))) == Targets(proctors=(0, 2))
    assert table.targets(head(status("e2"))) == Targets(proctors=(1,))
    assert table.targets(head(status("e3"))) == Targets()

    routed = table.route(status("e1"), 3, 41)
    assert set(routed) == {0, 2}
    assert routed[2] == [ForProctors(exam="e1", partition=3, offset=41, event=status("e1"))]


def test_tombstone_ends_watch() -> None:
    table = RoutingTable()
    watch(table, 1, "e1")
    watch(table, 2, "e1")
    unwatch(table, 1, "e1")
    assert table.targets(head(status())) == Targets(proctors=(2,))
    unwatch(table, 2, "e1")
    assert table.targets(head(status())) == Targets()
    assert table.counts() == (0, 0)


def test_repeated_watch_record_is_not_new_but_new_request_is() -> None:
    table = RoutingTable()
    assert watch(table, 1, "e1", request="r1") == [WatchStarted(1, "e1", "r1")]
    assert watch(table, 1, "e1", request="r1") == []
    assert watch(table, 1, "e1", request="r2") == [WatchStarted(1, "e1", "r2")]
    assert table.watches() == [WatchStarted(1, "e1", "r2")]


def test_watch_after_tombstone_starts_again() -> None:
    table = RoutingTable()
    watch(table, 1, "e1", request="r1")
    unwatch(table, 1, "e1")
    assert watch(table, 1, "e1", request="r1") == [WatchStarted(1, "e1", "r1")]


def test_watch_ready_carries_request_and_positions() -> None:
    ready = WatchStarted(3, "e1", "r7").ready({0: 10, 1: -1})
    assert ready == WatchReady(exam="e1", request="r7", positions={0: 10, 1: -1})


# -- gateway instances ---------------------------------------------------------------------


def test_gateway_up_of_new_instance_clears_old_watches_and_connections() -> None:
    table = RoutingTable()
    gateway_up(table, 1, "old")
    watch(table, 1, "e1", instance="old")
    watch(table, 2, "e1", instance="other")
    connect(table, "c1", 1, "a1", instance="old")
    connect(table, "c2", 2, "a1", instance="other")

    gateway_up(table, 1, "new")

    assert table.targets(head(status())) == Targets(proctors=(2,))
    assert table.targets(head(message())) == Targets(proctors=(2,), students=(2,))
    assert table.counts() == (1, 1)


def test_gateway_up_of_same_instance_keeps_its_state() -> None:
    table = RoutingTable()
    gateway_up(table, 1, "i1")
    watch(table, 1, "e1")
    connect(table, "c1", 1, "a1")
    gateway_up(table, 1, "i1")
    assert table.targets(head(message())) == Targets(proctors=(1,), students=(1,))


def test_records_of_a_replaced_instance_are_ignored() -> None:
    table = RoutingTable()
    gateway_up(table, 1, "new")
    assert watch(table, 1, "e1", instance="old") == []
    connect(table, "c1", 1, "a1", instance="old")
    assert table.targets(head(message())) == Targets()
    # the live instance is heard
    assert watch(table, 1, "e1", instance="new") == [WatchStarted(1, "e1", "r1")]


def test_gateway_tombstone_forgets_the_instance_only() -> None:
    table = RoutingTable()
    gateway_up(table, 1, "new")
    watch(table, 1, "e1", instance="new")
    assert table.apply(gateway_key(1), None) == []
    assert table.targets(head(status())) == Targets(proctors=(1,))
    # with no instance known, any instance's records count again
    assert watch(table, 1, "e2", instance="other") == [WatchStarted(1, "e2", "r1")]


# -- students ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        message(),
        ProctorPaused(id="p", exam="e1", attempt="a1", ts=1, source=_PROCTOR),
        ProctorResumed(id="r", exam="e1", attempt="a1", ts=1, source=_PROCTOR),
        ProctorTimeExtended(id="t", exam="e1", attempt="a1", ts=1, source=_PROCTOR, seconds=60),
    ],
)
def test_command_reaches_students_slot_and_watchers(command: ExamEvent) -> None:
    table = RoutingTable()
    watch(table, 0, "e1")
    connect(table, "c1", 3, "a1")
    connect(table, "c2", 2, "a2")

    routed = table.route(command, 1, 7)

    assert routed == {
        0: [ForProctors(exam="e1", partition=1, offset=7, event=command)],
        3: [ForStudents(exam="e1", attempt="a1", partition=1, offset=7, event=command)],
    }


def test_student_events_never_go_to_students() -> None:
    table = RoutingTable()
    connect(table, "c1", 3, "a1")
    assert table.targets(head(status())) == Targets()
    alert = AlertRaised(
        id="al", exam="e1", attempt="a1", ts=1, source=_PROCTOR, kind="offline", detail="x"
    )
    assert table.targets(head(alert)) == Targets()


def test_command_for_attempt_without_connection_goes_to_proctors_only() -> None:
    table = RoutingTable()
    watch(table, 0, "e1")
    connect(table, "c1", 3, "a2")
    assert table.targets(head(message(attempt="a1"))) == Targets(proctors=(0,))


def test_same_slot_gets_both_items_when_proctor_and_student_share_it() -> None:
    table = RoutingTable()
    watch(table, 1, "e1")
    connect(table, "c1", 1, "a1")
    routed = table.route(message(), 0, 3)
    assert [item.kind for item in routed[1]] == ["for_proctors", "for_students"]


def test_student_moving_gateways_follows_the_connection() -> None:
    table = RoutingTable()
    connect(table, "c1", 1, "a1")
    connect(table, "c2", 2, "a1")  # reconnected elsewhere before the old close landed
    assert table.targets(head(message())).students == (1, 2)
    disconnect(table, "c1", 1, "a1")
    assert table.targets(head(message())).students == (2,)
    assert table.apply(connection_key("c2"), None) == []
    assert table.targets(head(message())).students == ()


def test_two_connections_on_one_slot_count_separately() -> None:
    table = RoutingTable()
    connect(table, "c1", 1, "a1")
    connect(table, "c2", 1, "a1")
    disconnect(table, "c1", 1, "a1")
    assert table.targets(head(message())).students == (1,)
    disconnect(table, "c2", 1, "a1")
    assert table.targets(head(message())).students == ()


def test_rewritten_connection_record_moves_not_duplicates() -> None:
    table = RoutingTable()
    connect(table, "c1", 1, "a1")
    connect(table, "c1", 2, "a1")
    assert table.targets(head(message())).students == (2,)
    assert table.counts() == (0, 1)


def test_disconnection_of_unknown_connection_is_harmless() -> None:
    table = RoutingTable()
    disconnect(table, "nope", 1, "a1")
    assert table.apply(connection_key("nope"), None) == []
    assert table.counts() == (0, 0)


def test_announcement_reaches_every_slot_with_students_of_the_exam() -> None:
    table = RoutingTable()
    watch(table, 0, "e1")
    connect(table, "c1", 1, "a1", exam="e1")
    connect(table, "c2", 2, "a2", exam="e1")
    connect(table, "c3", 2, "a3", exam="e1")
    connect(table, "c4", 3, "a4", exam="e2")

    routed = table.route(announcement("e1"), 2, 9)

    assert sorted(routed) == [0, 1, 2]
    expected = ForStudents(exam="e1", attempt=None, partition=2, offset=9, event=announcement("e1"))
    assert routed[1] == [expected]
    assert routed[2] == [expected]
    assert routed[0] == [ForProctors(exam="e1", partition=2, offset=9, event=announcement("e1"))]


def test_exam_wide_non_announcement_goes_to_proctors_only() -> None:
    table = RoutingTable()
    watch(table, 0, "e1")
    connect(table, "c1", 1, "a1")
    alert = AlertRaised(
        id="al", exam="e1", attempt=None, ts=1, source=_PROCTOR, kind="offline", detail="x"
    )
    assert table.targets(head(alert)) == Targets(proctors=(0,))


def test_liveness_and_unknown_keys_do_not_change_routing() -> None:
    table = RoutingTable()
    watch(table, 0, "e1")
    verdict = AttemptLiveness(exam="e1", attempt="a1", student="s1", online=False, since=1)
    assert table.apply(liveness_key("a1"), verdict) == []
    assert table.apply(b"something/else", None) == []
    assert table.apply(b"sub/not-a-slot/e1", None) == []
    assert table.targets(head(status())) == Targets(proctors=(0,))


def test_cached_targets_follow_presence_changes() -> None:
    table = RoutingTable()
    assert table.targets(head(message())) == Targets()
    connect(table, "c1", 1, "a1")
    assert table.targets(head(message())).students == (1,)
    watch(table, 4, "e1")
    assert table.targets(head(message())) == Targets(proctors=(4,), students=(1,))
    assert table.targets(head(message(attempt="a2"))) == Targets(proctors=(4,))


# -- heads ---------------------------------------------------------------------------------


def test_head_parses_the_verbatim_log_value() -> None:
    raw = encode_event(message())
    assert EventHead.parse(raw) == EventHead("e1", "a1", "proctor.message")
    assert EventHead.parse(encode_event(announcement())) == EventHead(
        "e1", None, "proctor.announcement"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"attempt": "a", "type": "x"}),
        orjson.dumps({"exam": "", "type": "x"}),
        orjson.dumps({"exam": "e", "attempt": 3, "type": "x"}),
        orjson.dumps({"exam": "e", "attempt": "a"}),
    ],
)
def test_head_rejects_what_routing_cannot_use(raw: bytes) -> None:
    with pytest.raises(BadEvent):
        EventHead.parse(raw)


# -- positions -----------------------------------------------------------------------------


def test_positions_start_one_below_the_start_offset() -> None:
    positions = PartitionPositions()
    positions.assigned({0: 0, 1: 120})
    assert positions.snapshot() == {0: -1, 1: 119}


def test_positions_follow_routed_offsets() -> None:
    positions = PartitionPositions()
    positions.assigned({0: 0, 1: 0})
    positions.routed(1, 17)
    assert positions.snapshot() == {0: -1, 1: 17}
    assert positions.snapshot([1, 5]) == {1: 17}


def test_positions_forget_revoked_partitions() -> None:
    positions = PartitionPositions()
    positions.assigned({0: 0, 1: 0})
    positions.routed(1, 50)
    positions.revoked([1])
    assert positions.snapshot() == {0: -1}
    assert positions.last(1) is None
    positions.assigned({1: 40})
    assert positions.snapshot() == {0: -1, 1: 39}


def test_positions_keep_events_routed_before_the_assignment_was_learnt() -> None:
    positions = PartitionPositions()
    positions.routed(2, 30)
    positions.assigned({2: 25})
    assert positions.snapshot() == {2: 30}
    assert positions.owned == frozenset({2})
