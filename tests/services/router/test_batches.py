"""The fast DeliveryBatch rendering decodes to exactly what the routing decisions say."""

from __future__ import annotations

from domain.routing import EventHead, RoutingTable, WatchStarted
from schemas.deliveries import DELIVERY_BATCH, DeliveryItem, ForProctors, ForStudents, WatchReady
from schemas.events import (
    EventSource,
    ExamEvent,
    ProctorAnnouncement,
    ProctorMessage,
    StudentAnswer,
    encode_event,
)
from schemas.presence import ExamWatch, StudentConnection, connection_key, watch_key
from services.router.batches import BatchBuilder

_PROCTOR = EventSource(kind="proctor", id="p1")


def table() -> RoutingTable:
    routing = RoutingTable()
    for slot in (0, 2):
        routing.apply(
            watch_key(slot, "e1"), ExamWatch(slot=slot, instance="i", exam="e1", request="r")
        )
    for conn, slot, attempt in (("c1", 1, "a1"), ("c2", 2, "a2")):
        routing.apply(
            connection_key(conn),
            StudentConnection(
                conn=conn,
                slot=slot,
                instance="i",
                exam="e1",
                attempt=attempt,
                student=f"s-{attempt}",
                opened_at=1,
                heartbeat_interval_s=5,
            ),
        )
    return routing


def raw(event: ExamEvent) -> bytes:
    return encode_event(event)  # what the gateways and the notifier write


def decode(records: list[tuple[int, bytes]]) -> dict[int, list[DeliveryItem]]:
    by_slot: dict[int, list[DeliveryItem]] = {}
    for slot, value in records:
        batch = DELIVERY_BATCH.validate_json(value)
        assert batch.slot == slot
        by_slot.setdefault(slot, []).extend(batch.items)
    return by_slot


def test_rendered_records_decode_to_the_routing_decisions() -> None:
    routing = table()
    events: list[tuple[ExamEvent, int, int]] = [
        (ProctorMessage(id="m", exam="e1", attempt="a1", ts=1, source=_PROCTOR, text="hi"), 0, 5),
        (
            ProctorAnnouncement(id="n", exam="e1", attempt=None, ts=2, source=_PROCTOR, text="x"),
            3,
            9,
        ),
        (
            StudentAnswer(
                id="s",
                exam="e1",
                attempt="a2",
                student="s-a2",
                ts=3,
                source=EventSource(kind="student", id="s-a2"),
                question=1,
                answer='"quoted" \u00e9',
            ),
            1,
            7,
        ),
    ]
    builder = BatchBuilder(max_record_bytes=1 << 20)
    expected: dict[int, list[DeliveryItem]] = {}
    for event, partition, offset in events:
        value = raw(event)
        builder.add_event(
            routing.targets(EventHead.parse(value)),
            EventHead.parse(value),
            partition,
            offset,
            value,
        )
        for slot, items in routing.route(event, partition, offset).items():
            expected.setdefault(slot, []).extend(items)

    records = list(builder.records())

    assert [slot for slot, _ in records] == sorted(expected), "one record per slot"
    assert decode(records) == expected
    assert builder.item_counts == {"for_proctors": 6, "for_students": 3, "watch_ready": 0}


def test_event_is_embedded_verbatim() -> None:
    value = (
        b'{"v":1,"id":"x","exam":"e1","attempt":"a1","ts":1,'
        b'"source":{"kind":"proctor","id":"p"},"type":"proctor.resumed"}'
    )
    builder = BatchBuilder(max_record_bytes=1 << 20)
    head = EventHead.parse(value)
    builder.add_event(table().targets(head), head, 0, 1, value)
    for _, record in builder.records():
        assert value in record


def test_watch_ready_round_trips_with_integer_partitions() -> None:
    builder = BatchBuilder(max_record_bytes=1 << 20)
    builder.add_watch_ready(3, WatchStarted(3, "e1", "req").ready({0: 41, 11: -1}))
    (record,) = builder.records()
    assert decode([record]) == {
        3: [WatchReady(exam="e1", request="req", positions={0: 41, 11: -1})]
    }


def test_large_batches_are_split_in_order_under_the_size_limit() -> None:
    routing = table()
    limit = 16 * 1024
    builder = BatchBuilder(max_record_bytes=limit)
    ids = []
    for n in range(300):
        event = ProctorMessage(
            id=f"m{n}", exam="e1", attempt="a1", ts=n, source=_PROCTOR, text="y" * 200
        )
        value = raw(event)
        head = EventHead.parse(value)
        builder.add_event(routing.targets(head), head, 0, n, value)
        ids.append(event.id)

    records = list(builder.records())

    per_slot = {slot: [r for s, r in records if s == slot] for slot in (0, 1, 2)}
    assert all(len(chunks) > 1 for chunks in per_slot.values())
    assert all(len(record) <= limit + 64 for _, record in records)
    decoded = decode(records)
    for slot in (0, 2):
        assert [item.event.id for item in decoded[slot] if isinstance(item, ForProctors)] == ids
    assert [item.event.id for item in decoded[1] if isinstance(item, ForStudents)] == ids


def test_oversized_single_item_still_goes_out_alone() -> None:
    builder = BatchBuilder(max_record_bytes=1024)
    value = raw(
        ProctorMessage(id="big", exam="e1", attempt="a1", ts=1, source=_PROCTOR, text="z" * 1900)
    )
    head = EventHead.parse(value)
    builder.add_event(table().targets(head), head, 0, 1, value)
    builder.add_event(table().targets(head), head, 0, 2, value)
    records = list(builder.records())
    assert len([slot for slot, _ in records if slot == 0]) == 2
    second = decode(records)[0][1]
    assert isinstance(second, ForProctors) and second.offset == 2
