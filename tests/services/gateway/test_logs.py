"""A real gateway process's log: one JSON object per line, libraries included, each naming the
service; connects, disconnects and refusals by exam and attempt; never a token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from adapters.settings import CommonSettings
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from simulator.system import isolated_env
from tests.conftest import scaled
from tests.services.gateway.conftest import SECRET

pytestmark = pytest.mark.integration

CODEC = TokenCodec(SECRET)


@pytest.fixture
async def gateway_process(
    settings: CommonSettings, tmp_path: Path
) -> AsyncIterator[tuple[str, Path, asyncio.subprocess.Process]]:
    port = unused_port()
    run = settings.redis.key_prefix.rstrip(":")
    env = {
        **os.environ,
        **isolated_env(run, settings.kafka, secret=SECRET),
        "PROCTOR_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "PROCTOR_REDIS__URL": settings.redis.url,
        "PROCTOR_GATEWAY__PORT": str(port),
        "PROCTOR_GATEWAY__SLOT": "3",
        "PROCTOR_GATEWAY__CONNECT_LIMIT": "2",
        "PROCTOR_LOG_JSON": "true",
        # The most verbose level: no library may print a token even at DEBUG.
        "PROCTOR_LOG_LEVEL": "DEBUG",
    }
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.gateway", env=env, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(scaled(60)):
            while True:
                assert process.returncode is None, log_path.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield url, log_path, process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(scaled(20)):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def _refusal(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    # Like a browser: take the error frame, then echo the server's close code.
    ws = await http.ws_connect(f"{url}/ws?token={token}", autoclose=False)
    error: dict[str, Any] = json.loads((await ws.receive(timeout=scaled(10))).data)
    closing = await ws.receive(timeout=scaled(10))
    await ws.close(code=closing.data)
    return error


async def test_gateway_log_lines_are_json_name_the_service_and_never_the_token(
    gateway_process: tuple[str, Path, asyncio.subprocess.Process],
) -> None:
    url, log_path, process = gateway_process
    student = CODEC.issue(
        StudentIdentity(role="student", sub="stu-log", exam="exam-log", attempt="att-log")
    )
    proctor = CODEC.issue(ProctorIdentity(role="proctor", sub="proc-log", exams=("exam-log",)))
    expired = CODEC.issue(
        StudentIdentity(role="student", sub="stu-late", exam="exam-log", attempt="att-late"),
        ttl_s=-60,
    )
    churn = CODEC.issue(
        StudentIdentity(role="student", sub="stu-churn", exam="exam-log", attempt="att-churn")
    )
    tokens = [student, proctor, expired, churn, "not-a-jwt-but-still-secret"]

    async with aiohttp.ClientSession() as http:
        for token in (student, proctor):
            ws = await http.ws_connect(f"{url}/ws?token={token}")
            assert json.loads((await ws.receive(timeout=scaled(10))).data)["type"] == "welcome"
            await ws.close()
        assert (await _refusal(http, url, expired))["code"] == "token_expired"
        assert (await _refusal(http, url, tokens[-1]))["code"] == "token_invalid"
        for _ in range(2):  # the connect limit is 2 per window
            ws = await http.ws_connect(f"{url}/ws?token={churn}")
            await ws.receive(timeout=scaled(10))
            await ws.close()
        assert (await _refusal(http, url, churn))["code"] == "too_many_connects"

    await asyncio.sleep(0.5)  # the refusal line follows the close
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(scaled(20)):
        await process.wait()
    text = log_path.read_text()
    lines: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines() if line.strip()]

    assert all(line["service"] == "gateway" for line in lines)
    assert all({"event", "level", "logger", "timestamp"} <= line.keys() for line in lines)
    assert any(line["logger"].startswith("aiokafka") for line in lines), "library lines"
    for token in tokens:
        assert token not in text
    assert SECRET not in text

    def one(event: str, **fields: Any) -> dict[str, Any]:
        found = [
            line
            for line in lines
            if line["event"] == event and all(line.get(k) == v for k, v in fields.items())
        ]
        assert len(found) == 1, (event, fields, [line for line in lines if "conn" in line])
        return found[0]

    connected = one("connected", exam="exam-log", attempt="att-log", student="stu-log")
    left = one("disconnected", exam="exam-log", attempt="att-log", reason="client_closed")
    assert left["conn"] == connected["conn"] and left["conn"].startswith("c3-")
    one("connected", proctor="proc-log", exams=["exam-log"])
    one("disconnected", proctor="proc-log", exams=["exam-log"])
    one("refused", reason="token_expired", exam="exam-log", attempt="att-late")
    invalid = one("refused", reason="token_invalid")
    assert "exam" not in invalid and invalid["remote"] == "127.0.0.1"
    one("refused", reason="too_many_connects", exam="exam-log", attempt="att-churn")
