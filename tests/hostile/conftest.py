"""A real gateway (in-process, real Kafka and Redis) tuned so hostile cases finish quickly.

Only the timings a test must wait out are shortened (publish deadline, send timeout, close
grace, handshake timeout); the limits the report exercised (rate, flood, connect limit)
keep their documented defaults.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession, ClientWebSocketResponse
from aiohttp.test_utils import TestServer

from adapters.settings import CommonSettings
from adapters.tokens import ProctorIdentity, StudentIdentity
from services.gateway.app import create_app, server_options
from services.gateway.settings import GatewayOptions, GatewaySettings
from tests.services.gateway.conftest import CODEC, SECRET
from tests.services.gateway.test_publish import next_frame

Gateway = tuple[GatewaySettings, TestServer]
Connect = Callable[..., Awaitable[ClientWebSocketResponse]]


def hostile_options(slot: int = 1) -> GatewayOptions:
    return GatewayOptions(
        slot=slot,
        token_secret=SECRET,
        publish_deadline_s=1.0,
        send_timeout_s=1.0,
        close_grace_s=0.5,
        handshake_timeout_s=1.0,
    )


async def start_gateway(settings: CommonSettings, slot: int = 1) -> Gateway:
    gateway_settings = GatewaySettings(**settings.model_dump(), gateway=hostile_options(slot))
    server = TestServer(create_app(gateway_settings), host="127.0.0.1")
    await server.start_server(**server_options(gateway_settings.gateway))
    return gateway_settings, server


@pytest.fixture
async def gateway(settings: CommonSettings) -> AsyncIterator[Gateway]:
    started = await start_gateway(settings)
    yield started
    await started[1].close()


def student(attempt: str, **claims: Any) -> str:
    return CODEC.issue(
        StudentIdentity(
            role="student", sub=f"stu-{attempt}", exam="exam1", attempt=attempt, **claims
        )
    )


def proctor(sub: str = "proc1") -> str:
    return CODEC.issue(ProctorIdentity(role="proctor", sub=sub, exams=("exam1",)))


@pytest.fixture
async def connect(gateway: Gateway) -> AsyncIterator[Connect]:
    async with ClientSession() as http:

        async def _connect(token: str, server: TestServer | None = None) -> ClientWebSocketResponse:
            target = server or gateway[1]
            return await http.ws_connect(target.make_url(f"/ws?token={token}"))

        yield _connect


async def neighbour_is_acked(ws: ClientWebSocketResponse, frame_id: str, seq: int) -> None:
    """The well-behaved student beside the hostile one: its event is acknowledged."""
    await ws.send_str(f'{{"type":"status","id":"{frame_id}","seq":{seq},"status":"away"}}')
    assert await next_frame(ws, "ack", "error") == {"type": "ack", "id": frame_id}


# -- raw sockets, for peers no WebSocket library would imitate -------------------------------


def upgrade_request(port: int, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    """The kernel's state of this socket (``tcpi_state``, the first byte of TCP_INFO)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


async def raw_websocket(
    port: int, token: str, *, receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Set before connect so the advertised window stays small: the peer "never reads".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
    writer.write(upgrade_request(port, token))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer, sock
