"""Student frames through one real gateway into the real Kafka log."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer

from schemas.events import decode_event
from services.gateway.settings import GatewaySettings
from tests.conftest import scaled
from tests.services.gateway.conftest import Connect, student_token

pytestmark = pytest.mark.integration


async def read_log(settings: GatewaySettings, *, settle_s: float = 1.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        settings.kafka.events_topic,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        events: list[Any] = []
        deadline = asyncio.get_running_loop().time() + scaled(settle_s)
        while asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                events.extend(decode_event(r.value) for r in records)
        return events
    finally:
        await consumer.stop()


async def next_frame(ws: Any, *types: str) -> dict[str, Any]:
    async with asyncio.timeout(scaled(10)):
        while True:
            frame: dict[str, Any] = orjson.loads((await ws.receive()).data)
            if not types or frame["type"] in types:
                return frame


async def test_student_event_is_acked_after_it_is_in_the_log(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    settings, _ = gateway
    ws = await connect(student_token())
    welcome = await next_frame(ws, "welcome")
    assert welcome["role"] == "student" and welcome["heartbeat_interval_s"] == 5.0
    await ws.send_str('{"type":"status","id":"e-1","seq":1,"status":"away"}')
    ack = await next_frame(ws, "ack", "error")
    assert ack == {"type": "ack", "id": "e-1"}
    await ws.close()
    events = await read_log(settings)
    status = [e for e in events if e.type == "student.status"]
    assert [(e.id, e.attempt, e.student, e.status) for e in status] == [
        ("e-1", "att1", "stu1", "away")
    ]
    assert status[0].source.kind == "student" and status[0].source.gateway == 1
    assert any(e.type == "student.connected" for e in events)


async def test_legacy_figure_4_frame_becomes_status_and_progress(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    settings, _ = gateway
    ws = await connect(student_token())
    await next_frame(ws, "welcome")
    legacy = {
        "type": "message_to_master",
        "clientConnectionSocketId": "sock-1",
        "message": {
            "action": "lmsQuizMonitoringStudent",
            "data": {
                "quiz_id": "exam1",
                "quiz_attempt_id": "att1",
                "student_id": "stu1",
                "user_status": "away",
                "question_answered": 3,
                "question_total": 10,
                "question_number_current": 4,
                "score": 0,
                "student_name": "Ann",
                "time_end": "2099-01-01T00:00:00Z",
            },
        },
    }
    await ws.send_bytes(orjson.dumps(legacy))
    await asyncio.sleep(scaled(0.5))
    await ws.close()
    events = await read_log(settings)
    kinds = [e.type for e in events if e.type != "student.connected"]
    assert kinds == ["student.status", "student.progress"]
    progress = events[-1]
    assert progress.type == "student.progress"
    assert (progress.answered, progress.total, progress.question_current) == (3, 10, 4)
