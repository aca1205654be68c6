"""The router against the real Kafka: presence in, log in, deliveries out, per slot."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from adapters.dead_letters import DeadLetter, read_letters
from adapters.settings import CommonSettings
from schemas.deliveries import ForProctors, WatchReady
from schemas.events import log_key
from services.router.errors import TopicMissing
from tests.conftest import scaled
from tests.services.router.conftest import (
    Deliveries,
    Kafka,
    Logged,
    RouterRunner,
    announcement,
    message,
    status,
)
from tests.waiting import eventually

pytestmark = pytest.mark.integration

ALL_PARTITIONS = {0, 1, 2, 3}  # the settings fixture's log has 4 partitions
_sync_ids = itertools.count()


async def presence_applied(kafka: Kafka, deliveries: Deliveries) -> None:
    """Wait until the router has applied every presence record written so far.

    Presence is one ordered partition: once the router answers a watch written now, it has
    applied everything before it.
    """
    request = f"sync-{next(_sync_ids)}"
    await kafka.watch(0, f"exam-{request}", request)
    await eventually(
        lambda: deliveries.ready(0, request), within_s=20, what=f"WatchReady {request}"
    )


async def test_watch_routes_exam_events_to_watching_slot_only(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    await kafka.watch(1, "exam-a", "req-a")
    await kafka.watch(2, "exam-b", "req-b")
    await routers.start()

    ready = await eventually(
        lambda: deliveries.ready(1, "req-a"), within_s=30, what="WatchReady for slot 1"
    )
    assert ready[0].exam == "exam-a"
    assert ready[0].positions == {p: -1 for p in ALL_PARTITIONS}, "empty log: nothing routed"

    logged = await kafka.log(
        *(status("exam-a", f"att-a{i}") for i in range(20)),
        *(status("exam-b", f"att-b{i}") for i in range(20)),
    )
    await eventually(
        lambda: len(deliveries.event_ids(1)) >= 20 and len(deliveries.event_ids(2)) >= 20,
        within_s=20,
        what="both watching slots got their exam's events",
    )

    for slot, exam in ((1, "exam-a"), (2, "exam-b")):
        expected = {(x.event.id, x.partition, x.offset) for x in logged if x.event.exam == exam}
        got = {(i.event.id, i.partition, i.offset) for i in deliveries.proctor_items(slot)}
        assert got == expected
        assert all(item.exam == exam for item in deliveries.proctor_items(slot))
        assert all(
            item.event == x.event
            for item in deliveries.proctor_items(slot)
            for x in logged
            if x.event.id == item.event.id
        ), "the event travels verbatim"
    assert deliveries.by_slot[0] == []
    assert deliveries.by_slot[3] == []


async def test_watch_ready_positions_split_the_log_without_gap_or_overlap(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    # Slot 0 watches from the start: it shows which events the router has routed.
    await kafka.watch(0, "exam-a", "req-early")
    await routers.start()
    await eventually(lambda: deliveries.ready(0, "req-early"), within_s=30, what="router up")
    before = await kafka.log(*(status("exam-a", f"att-{i}") for i in range(40)))
    await eventually(
        lambda: len(deliveries.event_ids(0)) >= 40, within_s=20, what="early events routed"
    )

    during: list[Logged] = []
    stop_writing = asyncio.Event()

    async def keep_logging() -> None:
        for burst in itertools.count():
            if stop_writing.is_set():
                return
            during.extend(await kafka.log(*(status("exam-a", f"att-{i}") for i in range(5))))
            await asyncio.sleep(0.01 * (burst % 3))

    writer = asyncio.create_task(keep_logging())
    try:
        await eventually(lambda: len(during) >= 20, within_s=10, what="events flowing")
        await kafka.watch(1, "exam-a", "req-late")
        ready = await eventually(
            lambda: deliveries.ready(1, "req-late"), within_s=20, what="WatchReady, new watch"
        )
        await eventually(lambda: len(during) >= 200, within_s=20, what="events after the watch")
    finally:
        stop_writing.set()
        await writer
    logged = before + during
    await eventually(
        lambda: len(deliveries.event_ids(0)) >= len(logged), within_s=30, what="all routed"
    )

    positions = ready[0].positions
    assert set(positions) == ALL_PARTITIONS
    assert all(x.offset <= positions[x.partition] for x in before), "routed before the watch"
    items = deliveries.by_slot[1]
    ready_at = next(
        i
        for i, item in enumerate(items)
        if isinstance(item, WatchReady) and item.request == "req-late"
    )
    assert not any(isinstance(item, ForProctors) for item in items[:ready_at])
    after = [item for item in items[ready_at + 1 :] if isinstance(item, ForProctors)]
    assert all(item.offset > positions[item.partition] for item in after), "no overlap"
    expected = {(x.partition, x.offset) for x in logged if x.offset > positions[x.partition]}
    assert expected, "the test must log events after the watch"
    assert {(item.partition, item.offset) for item in after} == expected, "no gap"
    # and per partition, in log order
    for partition in ALL_PARTITIONS:
        offsets = [item.offset for item in after if item.partition == partition]
        assert offsets == sorted(offsets)


async def test_commands_reach_the_students_slots(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    await kafka.watch(0, "exam-a", "req-p")
    await kafka.connect("c1", 2, "exam-a", "att-1")
    await kafka.connect("c2", 3, "exam-a", "att-2")
    await kafka.connect("c3", 1, "exam-b", "att-9")
    await routers.start()
    await eventually(lambda: deliveries.ready(0, "req-p"), within_s=30, what="router up")

    to_att1, to_nobody, plain, to_all = await kafka.log(
        message("exam-a", "att-1"),
        message("exam-a", "att-unconnected"),
        status("exam-a", "att-1"),
        announcement("exam-a"),
    )
    await eventually(
        lambda: len(deliveries.student_items(2)) >= 2 and len(deliveries.student_items(3)) >= 1,
        within_s=20,
        what="student deliveries",
    )
    await eventually(
        lambda: len(deliveries.event_ids(0, "exam-a")) >= 4, within_s=20, what="proctors"
    )

    def students(slot: int) -> list[tuple[str | None, str]]:
        return [(item.attempt, item.event.id) for item in deliveries.student_items(slot)]

    assert students(2) == [("att-1", to_att1.event.id), (None, to_all.event.id)]
    assert students(3) == [(None, to_all.event.id)]
    assert students(1) == [], "students of another exam get nothing"
    assert sorted(deliveries.event_ids(0, "exam-a")) == sorted(
        x.event.id for x in (to_att1, to_nobody, plain, to_all)
    ), "proctors see every command, even one for an attempt with no connection"
    student_item = deliveries.student_items(2)[0]
    assert (student_item.partition, student_item.offset) == (to_att1.partition, to_att1.offset)

    # The student moves to gateway 1: commands follow her there.
    await kafka.connect("c4", 1, "exam-a", "att-1")
    await kafka.disconnect("c1", 2, "exam-a", "att-1")
    await presence_applied(kafka, deliveries)
    (moved,) = await kafka.log(message("exam-a", "att-1"))
    await eventually(
        lambda: ("att-1", moved.event.id) in students(1),
        within_s=20,
        what="command at the student's new gateway",
    )
    await eventually(
        lambda: moved.event.id in deliveries.event_ids(0, "exam-a"), within_s=20, what="proctors"
    )
    assert moved.event.id not in [event_id for _, event_id in students(2)]


async def test_restart_rebuilds_routing_from_presence(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    await routers.start()
    await kafka.watch(1, "exam-a", "req-1")
    await kafka.connect("c1", 2, "exam-a", "att-1")
    await eventually(lambda: deliveries.ready(1, "req-1"), within_s=30, what="live watch")
    (first,) = await kafka.log(status("exam-a", "att-1"))
    await eventually(
        lambda: first.event.id in deliveries.event_ids(1), within_s=20, what="routed before restart"
    )
    await routers.stop()
    confirmed_before = len(deliveries.ready(1, "req-1"))

    await routers.start()  # same app id and group; presence is not written again

    # It confirms every watch again: a gateway may still be waiting for the answer.
    readies = await eventually(
        lambda: deliveries.ready(1, "req-1")[confirmed_before:],
        within_s=30,
        what="watch confirmed after restart",
    )
    assert readies[0].positions[first.partition] >= first.offset, "resumes after the commit"
    second, command = await kafka.log(status("exam-a", "att-1"), message("exam-a", "att-1"))
    await eventually(
        lambda: {second.event.id, command.event.id} <= set(deliveries.event_ids(1)),
        within_s=20,
        what="proctor deliveries after restart",
    )
    await eventually(
        lambda: [i.event.id for i in deliveries.student_items(2)] == [command.event.id],
        within_s=20,
        what="student delivery after restart",
    )
    assert deliveries.event_ids(1).count(first.event.id) == 1, "committed events are not re-routed"


async def test_new_gateway_instance_clears_old_watches_and_students(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    await kafka.gateway_up(1, "gw-old")
    await kafka.watch(1, "exam-a", "req-old", instance="gw-old")
    await kafka.connect("c1", 1, "exam-a", "att-1", instance="gw-old")
    await kafka.watch(2, "exam-sentinel", "req-sentinel")
    await routers.start()
    await eventually(lambda: deliveries.ready(1, "req-old"), within_s=30, what="old watch")
    (before,) = await kafka.log(message("exam-a", "att-1"))
    await eventually(
        lambda: deliveries.student_items(1) and deliveries.event_ids(1, "exam-a"),
        within_s=20,
        what="the old instance is served",
    )
    served = len(deliveries.by_slot[1])

    await kafka.gateway_up(1, "gw-new")
    await presence_applied(kafka, deliveries)
    after = await kafka.log(message("exam-a", "att-1"), status("exam-a", "att-1"))
    # Same key, so same partition and routed after them: once it arrives, they were routed.
    (sentinel,) = await kafka.log(status("exam-sentinel", "att-1"), key=log_key(before.event))
    await eventually(
        lambda: sentinel.event.id in deliveries.event_ids(2), within_s=20, what="sentinel"
    )
    assert {x.partition for x in after} == {sentinel.partition}
    assert len(deliveries.by_slot[1]) == served, "nothing for the replaced instance"

    # The new instance watches again and is served; the old instance's student is gone.
    await kafka.watch(1, "exam-a", "req-new", instance="gw-new")
    await eventually(lambda: deliveries.ready(1, "req-new"), within_s=20, what="new watch")
    (again,) = await kafka.log(message("exam-a", "att-1"))
    await eventually(
        lambda: again.event.id in deliveries.event_ids(1), within_s=20, what="new instance served"
    )
    assert [i.event.id for i in deliveries.student_items(1)] == [before.event.id]


async def test_ops_endpoints_report_readiness_and_counts(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    await kafka.watch(1, "exam-a", "req-a")
    service = await routers.start()
    assert service.ready()
    await eventually(lambda: deliveries.ready(1, "req-a"), within_s=30, what="router up")
    await kafka.log(*(status("exam-a", f"att-{i}") for i in range(10)))
    await eventually(lambda: len(deliveries.event_ids(1)) >= 10, within_s=20, what="routed")

    host, port = service.ops_address
    async with aiohttp.ClientSession(base_url=f"http://{host}:{port}") as http:
        async with http.get("/readyz") as response:
            assert response.status == 200
        async with http.get("/healthz") as response:
            assert response.status == 200
        async with http.get("/metrics") as response:
            body = await response.text()
    assert "router_events_total 10.0" in body
    assert 'router_items_total{kind="for_proctors"} 10.0' in body
    assert "router_watches 1.0" in body
    assert "router_owned_partitions 4.0" in body
    await routers.stop()
    assert not service.ready()


async def test_two_workers_split_the_partitions_and_the_survivor_takes_over(
    settings: CommonSettings, kafka: Kafka, deliveries: Deliveries
) -> None:
    first, second = RouterRunner(settings), RouterRunner(settings)
    second.app_id = first.app_id  # one deployment: one consumer group
    await kafka.watch(1, "exam-a", "req-a")
    try:
        await first.start()
        await second.start()

        def covered() -> set[int]:
            # a gateway merges the positions of every WatchReady with its request
            return {p for ready in deliveries.ready(1, "req-a") for p in ready.positions}

        def split() -> bool:
            owned = [set(r.current.positions.owned) for r in (first, second) if r.current]
            return len(owned) == 2 and all(owned) and not owned[0] & owned[1]

        await eventually(split, within_s=60, what="each worker owns some partitions")
        await eventually(lambda: covered() == ALL_PARTITIONS, within_s=20, what="all covered")
        logged = await kafka.log(*(status("exam-a", f"att-{i}") for i in range(30)))
        await eventually(
            lambda: {x.event.id for x in logged} <= set(deliveries.event_ids(1)),
            within_s=20,
            what="events of every partition routed by one worker or the other",
        )

        confirmed = len(deliveries.ready(1, "req-a"))
        await first.stop()
        survivor = second.current
        assert survivor is not None
        await eventually(
            lambda: survivor.positions.owned == ALL_PARTITIONS, within_s=60, what="takeover"
        )
        later = await eventually(
            lambda: [
                r
                for r in deliveries.ready(1, "req-a")[confirmed:]
                if set(r.positions) == ALL_PARTITIONS
            ],
            within_s=20,
            what="the survivor confirms the watch for every partition",
        )
        for x in logged:
            assert later[0].positions[x.partition] >= x.offset
        more = await kafka.log(*(status("exam-a", f"att-{i}") for i in range(30)))
        await eventually(
            lambda: {x.event.id for x in more} <= set(deliveries.event_ids(1)),
            within_s=20,
            what="the survivor routes every partition",
        )
    finally:
        await first.stop()
        await second.stop()


async def test_router_stops_when_the_presence_topic_is_deleted(
    settings: CommonSettings, routers: RouterRunner
) -> None:
    service = await routers.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.kafka.presence_topic])
    finally:
        await admin.close()
    with pytest.raises(TopicMissing):
        async with asyncio.timeout(scaled(40)):
            await service.wait()
    assert not service.ready()


async def test_an_unroutable_record_is_put_aside_and_routing_goes_on(
    settings: CommonSettings, kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    topic = settings.kafka.events_topic
    await kafka.watch(1, "exam-p", "req-p")
    await routers.start()
    await eventually(lambda: deliveries.ready(1, "req-p"), within_s=30, what="WatchReady")
    [before] = await kafka.log(status("exam-p", "att-p"))
    partition, offset = await kafka.raw(topic, b"att-p", b"\x00 not json")
    [after] = await kafka.log(status("exam-p", "att-p"))  # same partition, behind it
    await eventually(
        lambda: after.event.id in deliveries.event_ids(1), within_s=20, what="routed past it"
    )
    assert before.event.id in deliveries.event_ids(1)
    letters: list[DeadLetter] = []
    for _ in range(100):
        letters = await read_letters(settings.kafka, topic)
        if letters:
            break
        await asyncio.sleep(0.1)
    [letter] = letters
    assert (letter.partition, letter.offset) == (partition, offset)
    assert (letter.consumer, letter.reason) == ("router", "unroutable")
    assert letter.original_value() == b"\x00 not json"


async def test_slots_with_watchers_hear_which_partitions_a_live_router_routes(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    await kafka.watch(1, "exam-a", "req-a")
    await routers.start()
    await eventually(lambda: deliveries.ready(1, "req-a"), within_s=30, what="WatchReady")
    beats = await eventually(
        lambda: deliveries.beats[1][-2:] if len(deliveries.beats[1]) >= 2 else None,
        within_s=20,
        what="two router beats on the watching slot",
    )
    assert all(set(beat.partitions) == ALL_PARTITIONS for beat in beats)
    assert len({beat.router for beat in beats}) == 1
    assert beats[1].ts > beats[0].ts
    assert deliveries.beats[2] == [], "no beats where nobody watches"
    # A stopped router stops beating: the gateway's cue that its proctors' view is stale.
    await routers.stop()
    heard = len(deliveries.beats[1])
    await asyncio.sleep(2.5)
    assert len(deliveries.beats[1]) == heard


async def test_a_slot_without_a_deliveries_partition_stalls_no_other_exam(
    kafka: Kafka, deliveries: Deliveries, routers: RouterRunner
) -> None:
    """Presence naming a slot the deliveries topic has no partition for (a gateway started
    with a wrong slot, or a stray record): that slot gets nothing, every other slot its
    deliveries, and the router keeps running."""
    await kafka.watch(7, "exam-x", "req-x")  # the deliveries topic has partitions 0-3
    await kafka.watch(1, "exam-a", "req-a")
    runner = await routers.start()
    await eventually(lambda: deliveries.ready(1, "req-a"), within_s=30, what="WatchReady")
    logged = await kafka.log(status("exam-x", "att-x"), status("exam-a", "att-a"))
    await eventually(
        lambda: logged[1].event.id in deliveries.event_ids(1), within_s=20, what="exam-a routed"
    )
    await presence_applied(kafka, deliveries)
    assert runner.failure is None
    assert runner.registry.get_sample_value("router_bad_presence_records_total") == 1
