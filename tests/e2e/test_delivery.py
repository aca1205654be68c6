"""Students on gateway 0, proctors on gateway 1: status, progress and commands cross over."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from simulator.clients import ProctorBot
from tests.e2e.conftest import System
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def row(proctor: ProctorBot, attempt: str, **expected: Any) -> dict[str, Any] | None:
    found = proctor.rows.get(attempt)
    if found is None or any(found.get(k) != v for k, v in expected.items()):
        return None
    return found


async def test_status_and_progress_reach_a_proctor_on_another_gateway(system: System) -> None:
    student = await system.student("ex-a", "a1", slot=0, name="Ann")
    proctor = await system.proctor("ex-a", slot=1)
    await eventually(lambda: row(proctor, "a1", status="active"), within_s=5, what="a1 active")
    await student.set_status("away")
    away = await eventually(lambda: row(proctor, "a1", status="away"), within_s=5, what="away")
    assert away["away_count"] == 1 and away["name"] == "Ann"
    student.question, student.answered = 7, 6
    await student.progress()
    moved = await eventually(
        lambda: row(proctor, "a1", question_current=7, answered=6), within_s=5, what="progress"
    )
    assert moved["total"] == 20
    assert proctor.out_of_order == 0


async def test_proctor_commands_reach_the_student_and_extension_is_stored(system: System) -> None:
    student = await system.student("ex-b", "b1", slot=0)
    student.question, student.answered = 2, 1
    await student.send("progress", question_current=2, answered=1, total=20, time_remaining_s=600)
    proctor = await system.proctor("ex-b", slot=1)
    await eventually(lambda: row(proctor, "b1", answered=1), within_s=5, what="progress seen")
    before = proctor.rows["b1"]["time_end"]

    message = await proctor.command("message", "ex-b", attempt="b1", text="Eyes on your screen")
    await proctor.command("pause", "ex-b", attempt="b1", reason="check")
    await eventually(lambda: message in proctor.acked, within_s=5, what="message acked")
    await eventually(lambda: student.paused, within_s=5, what="student paused")
    texts = [n.get("text") for n in student.notices if n["type"] == "proctor.message"]
    assert texts == ["Eyes on your screen"]
    await proctor.command("resume", "ex-b", attempt="b1")
    await eventually(lambda: not student.paused, within_s=5, what="student resumed")
    await proctor.command("extend", "ex-b", attempt="b1", seconds=300)
    extended = await eventually(
        lambda: [n for n in student.notices if n["type"] == "proctor.time_extended"],
        within_s=5,
        what="extension notice",
    )
    assert extended[0]["seconds"] == 300
    seen = await eventually(lambda: row(proctor, "b1", extended_s=300), within_s=5, what="row")
    assert seen["time_end"] >= before + 300_000
    assert all(
        e["source"]["kind"] == "proctor" for e in proctor.events if e["type"].startswith("proctor.")
    )

    dynamo = system.settings.dynamo
    table = boto3.resource(
        "dynamodb",
        endpoint_url=dynamo.endpoint,
        region_name=dynamo.region,
        aws_access_key_id=dynamo.access_key_id,
        aws_secret_access_key=dynamo.secret_access_key,
    ).Table(dynamo.table)

    def stored() -> dict[str, Any] | None:
        item = table.get_item(Key={"pk": "ex-b", "sk": "stu-b1"}).get("Item")
        return item if item and item.get("extended_s") == 300 else None

    item = await eventually(stored, within_s=10, what="extension in DynamoDB")
    assert item["attempt"] == "b1" and item["paused"] is False


async def test_a_proctor_who_reconnects_mid_stream_misses_nothing(system: System) -> None:
    students = [await system.student("ex-c", f"c{n}", slot=0) for n in range(5)]
    first = await system.proctor("ex-c", slot=1)
    for round_no in range(20):
        for student in students:
            await student.progress()
            student.question += 1
        if round_no == 8:
            await first.close()
            again = await system.proctor("ex-c", slot=1)
    for student in students:
        await eventually(
            lambda s=student: row(again, s.attempt, client_seq=s.seq),  # type: ignore[misc]
            within_s=10,
            what=f"{student.attempt} final state",
        )
    assert again.out_of_order == 0 and again.snapshots == 1
    # Every live update after the snapshot moved each student strictly forward.
    last: dict[str, int] = {}
    for got in again.received:
        assert got.seq > last.get(got.attempt, -1)
        last[got.attempt] = got.seq
