"""A connection's writes: what one loop turn queued goes out as one socket write, in order,
while the socket keeps up; a socket that is behind is left to the writer task."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from aiohttp import WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import EofStream
from prometheus_client import CollectorRegistry

from adapters.tokens import ProctorIdentity
from schemas.views import StudentView
from services.gateway.connections import Connection, text_frame
from services.gateway.metrics import GatewayMetrics

VIEW = StudentView(exam="exam-1", attempt="a1", student="s1", status="active", seq=17)


class RecordingTransport(asyncio.Transport):
    """Takes writes like a socket whose kernel buffer has room, or holds them when told."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.backlog = 0
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.closing


class FakeWebSocket:
    """The part of ``web.WebSocketResponse`` the connection uses."""

    def __init__(self) -> None:
        self.closed = False
        self.sent: list[bytes] = []

    async def send_frame(self, message: bytes, opcode: WSMsgType) -> None:
        assert opcode is WSMsgType.TEXT
        self.sent.append(message)


def _connection(transport: RecordingTransport, ws: FakeWebSocket) -> Connection:
    return Connection(
        cast(web.WebSocketResponse, ws),
        ProctorIdentity(role="proctor", sub="proc-1", exams=("exam-1",)),
        "c0-test",
        max_frames=100,
        send_timeout_s=1.0,
        metrics=GatewayMetrics(CollectorRegistry()),
        transport=transport,
    )


async def _parse(data: bytes) -> list[bytes]:
    """Frames as a WebSocket client reads them (aiohttp's own reader)."""
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(BaseProtocol(loop), 2**20, loop=loop)
    WebSocketReader(queue, 2**20, compress=False, decode_text=False).feed_data(data)
    queue.feed_eof()
    messages: list[bytes] = []
    while True:
        try:
            message = await queue.read()
        except EofStream:
            return messages
        assert message.type is WSMsgType.TEXT
        messages.append(message.data)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
async def test_a_text_frame_is_what_aiohttp_writes_and_reads(size: int) -> None:
    payload = (b"x" * size)[:size]
    transport = RecordingTransport()
    writer = WebSocketWriter(BaseProtocol(asyncio.get_running_loop()), transport)

    await writer.send_frame(payload, WSMsgType.TEXT)

    assert text_frame(payload) == b"".join(transport.writes)
    assert await _parse(text_frame(payload)) == [payload]


async def test_frames_queued_in_one_turn_leave_in_one_write_in_order() -> None:
    transport, ws = RecordingTransport(), FakeWebSocket()
    conn = _connection(transport, ws)

    conn.send_raw(b'{"type":"ack","id":"a"}')
    conn.send_row(VIEW)
    conn.send_raw(b'{"type":"ack","id":"b"}')
    assert transport.writes == []  # nothing before the turn ends
    await asyncio.sleep(0)

    assert len(transport.writes) == 1 and ws.sent == []
    frames = await _parse(transport.writes[0])
    assert frames[:2] == [b'{"type":"ack","id":"a"}', b'{"type":"ack","id":"b"}']
    assert frames[2].startswith(b'{"type":"updates","exam":"exam-1","students":[')
    assert conn.pending == 0


async def test_a_socket_that_is_behind_is_written_by_the_writer_task() -> None:
    transport, ws = RecordingTransport(), FakeWebSocket()
    conn = _connection(transport, ws)
    writer = asyncio.create_task(conn.run_writer())
    transport.backlog = 10_000  # the kernel has not taken the last write yet

    conn.send_raw(b"first")
    conn.send_raw(b"second")
    await asyncio.sleep(0.01)

    assert transport.writes == [] and ws.sent == [b"first", b"second"]
    transport.backlog = 0
    conn.send_raw(b"third")
    await asyncio.sleep(0)
    assert await _parse(b"".join(transport.writes)) == [b"third"]
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)


async def test_nothing_is_written_after_the_websocket_closed() -> None:
    transport, ws = RecordingTransport(), FakeWebSocket()
    conn = _connection(transport, ws)
    ws.closed = True  # the client's close frame was answered

    conn.send_raw(b'{"type":"ack","id":"a"}')
    await asyncio.sleep(0)

    assert transport.writes == [] and ws.sent == []
