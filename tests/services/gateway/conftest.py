"""A gateway running in-process on the test's fresh topics, plus a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import ClientSession, ClientWebSocketResponse
from aiohttp.test_utils import TestServer

from adapters.settings import CommonSettings
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from services.gateway.app import create_app, server_options
from services.gateway.settings import GatewayOptions, GatewaySettings

SECRET = "test-secret-0123456789abcdef0123456789"
CODEC = TokenCodec(SECRET)


def student_token(exam: str = "exam1", attempt: str = "att1", student: str = "stu1") -> str:
    return CODEC.issue(StudentIdentity(role="student", sub=student, exam=exam, attempt=attempt))


def proctor_token(*exams: str, proctor: str = "proc1") -> str:
    return CODEC.issue(ProctorIdentity(role="proctor", sub=proctor, exams=exams or ("exam1",)))


Connect = Callable[[str], Awaitable[ClientWebSocketResponse]]


@pytest.fixture
async def gateway(settings: CommonSettings) -> AsyncIterator[tuple[GatewaySettings, TestServer]]:
    gateway_settings = GatewaySettings(
        **settings.model_dump(),
        gateway=GatewayOptions(slot=1, token_secret=SECRET, rate_per_s=50, rate_burst=50),
    )
    server = TestServer(create_app(gateway_settings), host="127.0.0.1")
    await server.start_server(**server_options(gateway_settings.gateway))
    yield gateway_settings, server
    await server.close()


@pytest.fixture
async def connect(gateway: tuple[GatewaySettings, TestServer]) -> AsyncIterator[Connect]:
    _, server = gateway
    async with ClientSession() as http:

        async def _connect(token: str) -> ClientWebSocketResponse:
            return await http.ws_connect(server.make_url(f"/ws?token={token}"))

        yield _connect
