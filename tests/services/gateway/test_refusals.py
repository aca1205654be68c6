"""What each bad input gets from a real gateway, and that nothing of it reaches the log."""

from __future__ import annotations

import asyncio
import time

import jwt
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from adapters.revocations import RedisRevocations
from services.gateway.settings import GatewaySettings
from tests.conftest import scaled
from tests.services.gateway.conftest import SECRET, Connect, proctor_token, student_token
from tests.services.gateway.test_publish import next_frame, read_log

pytestmark = pytest.mark.integration


def student_claims(expires_in_s: int) -> dict[str, object]:
    return {
        "role": "student",
        "sub": "stu1",
        "exam": "exam1",
        "attempt": "att1",
        "iss": "lms",
        "exp": int(time.time()) + expires_in_s,
    }


def forged_token() -> str:
    claims = student_claims(60)
    return jwt.encode(claims, "another-secret-0123456789abcdef012345", algorithm="HS256")


def expired_token() -> str:
    claims = student_claims(-60)
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("token", "code"),
    [(forged_token(), "token_invalid"), (expired_token(), "token_expired"), ("", "token_missing")],
)
async def test_bad_tokens_are_refused_with_4401_and_write_nothing(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect, token: str, code: str
) -> None:
    settings, _ = gateway
    ws = await connect(token)
    error = await next_frame(ws)
    assert error["type"] == "error" and error["code"] == code
    closing = await ws.receive()
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert ws.close_code == 4401
    assert await read_log(settings) == []


async def test_student_cannot_speak_for_another_attempt(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    settings, _ = gateway
    ws = await connect(student_token(attempt="att1"))
    await next_frame(ws, "welcome")
    other = {
        "type": "message_to_master",
        "message": {
            "action": "lmsQuizMonitoringStudent",
            "data": {
                "quiz_id": "exam1",
                "quiz_attempt_id": "att-of-someone-else",
                "student_id": "stu2",
                "user_status": "away",
            },
        },
    }
    await ws.send_bytes(orjson.dumps(other))
    assert (await next_frame(ws, "error"))["code"] == "forbidden"
    await ws.close()
    assert [e.type for e in await read_log(settings)] == ["student.connected"]


async def test_proctor_cannot_watch_or_command_an_exam_not_hers(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    settings, _ = gateway
    ws = await connect(proctor_token("exam1"))
    await next_frame(ws, "welcome")
    await ws.send_str('{"type":"subscribe","exam":"exam2"}')
    assert (await next_frame(ws, "error"))["code"] == "forbidden"
    await ws.send_str('{"type":"announce","id":"c1","exam":"exam2","text":"hi"}')
    refused = await next_frame(ws, "error")
    assert (refused["code"], refused["id"]) == ("forbidden", "c1")
    await ws.close()
    assert await read_log(settings) == []


async def test_malformed_unknown_and_oversized_frames_get_error_frames(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    settings, _ = gateway
    ws = await connect(student_token())
    await next_frame(ws, "welcome")
    cases = [
        ("{not json", "bad_json"),
        ('{"type":"teleport","id":"x1"}', "unknown_type"),
        ('{"type":"status","id":"x2","seq":1,"status":"sleeping"}', "bad_frame"),
        ('{"type":"subscribe","exam":"exam1"}', "not_allowed"),
        (
            '{"type":"answer","id":"x3","seq":2,"question":1,"answer":"' + "a" * 20_000 + '"}',
            "frame_too_large",
        ),
    ]
    for raw, code in cases:
        await ws.send_str(raw)
        assert (await next_frame(ws, "error"))["code"] == code, raw[:40]
    # The connection survived all of it.
    await ws.send_str('{"type":"status","id":"ok-1","seq":3,"status":"active"}')
    assert await next_frame(ws, "ack") == {"type": "ack", "id": "ok-1"}
    await ws.close()
    assert [e.id for e in await read_log(settings) if e.type != "student.connected"] == ["ok-1"]


async def test_a_frame_above_the_hard_limit_closes_only_that_connection(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    bystander = await connect(student_token(attempt="att2", student="stu2"))
    await next_frame(bystander, "welcome")
    ws = await connect(student_token())
    await next_frame(ws, "welcome")
    await ws.send_str("x" * (2 * 1024 * 1024))
    async with asyncio.timeout(scaled(10)):
        while (await ws.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
            pass
    assert ws.close_code == 1009
    await bystander.send_str('{"type":"status","id":"b-1","seq":1,"status":"away"}')
    assert await next_frame(bystander, "ack") == {"type": "ack", "id": "b-1"}


async def test_a_flood_is_throttled_without_hurting_a_neighbour(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    settings, _ = gateway
    neighbour = await connect(student_token(attempt="att2", student="stu2"))
    await next_frame(neighbour, "welcome")
    flooder = await connect(student_token())
    await next_frame(flooder, "welcome")
    for n in range(1, 301):
        await flooder.send_str(f'{{"type":"status","id":"f-{n}","seq":{n},"status":"away"}}')
    limited = await next_frame(flooder, "error")
    assert limited["code"] == "rate_limited" and limited["retry_after_ms"] > 0
    started = time.perf_counter()
    await neighbour.send_str('{"type":"status","id":"n-1","seq":1,"status":"away"}')
    assert await next_frame(neighbour, "ack") == {"type": "ack", "id": "n-1"}
    assert time.perf_counter() - started < scaled(2)
    await flooder.close()
    await neighbour.close()
    flood_ids = [e.id for e in await read_log(settings) if e.id.startswith("f-")]
    # Only what the bucket allowed (burst 50 in this fixture) reached the log, each once.
    assert 40 <= len(flood_ids) <= 80 and len(set(flood_ids)) == len(flood_ids)


async def test_a_revoked_token_is_refused_and_writes_nothing(
    gateway: tuple[GatewaySettings, TestServer], connect: Connect
) -> None:
    settings, _ = gateway
    token = student_token()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    client = aioredis.Redis.from_url(settings.redis.url)
    try:
        await RedisRevocations(client, settings.redis).revoke(
            jti, until_epoch_s=int(time.time()) + 60
        )
    finally:
        await client.aclose()
    ws = await connect(token)
    error = await next_frame(ws)
    assert (error["type"], error["code"]) == ("error", "token_revoked")
    await ws.receive()
    assert ws.close_code == 4401
    assert await read_log(settings) == []
    # Another token of the same student still works: revocation is per token.
    other = await connect(student_token())
    assert (await next_frame(other, "welcome"))["role"] == "student"
