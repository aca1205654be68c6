"""With ``ops_port`` set, health and metrics live on a private port, not beside /ws."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer, unused_port

from adapters.settings import CommonSettings
from services.gateway.app import create_app, server_options
from services.gateway.settings import GatewayOptions, GatewaySettings
from tests.services.gateway.conftest import SECRET, student_token
from tests.services.gateway.test_publish import next_frame

pytestmark = pytest.mark.integration


@pytest.fixture
async def private_ops(settings: CommonSettings) -> AsyncIterator[tuple[TestServer, int]]:
    ops_port = unused_port()
    gateway_settings = GatewaySettings(
        **settings.model_dump(),
        gateway=GatewayOptions(slot=1, token_secret=SECRET, ops_port=ops_port),
    )
    server = TestServer(create_app(gateway_settings), host="127.0.0.1")
    await server.start_server(**server_options(gateway_settings.gateway))
    yield server, ops_port
    await server.close()


async def test_health_and_metrics_are_on_the_ops_port_only(
    private_ops: tuple[TestServer, int],
) -> None:
    server, ops_port = private_ops
    public = f"http://127.0.0.1:{server.port}"
    ops = f"http://127.0.0.1:{ops_port}"
    async with ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(ops + path) as answer:
                assert answer.status == 200, path
            async with http.get(public + path) as answer:
                assert answer.status == 404, path
        async with http.get(ops + "/metrics") as answer:
            assert "gateway_connections" in await answer.text()
        # The public port still serves the WebSocket.
        async with http.ws_connect(
            f"ws://127.0.0.1:{server.port}/ws?token={student_token()}"
        ) as ws:
            assert (await next_frame(ws))["type"] == "welcome"
