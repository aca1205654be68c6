"""Open connections on this gateway and their writers.

Each connection owns a bounded ``SendQueue``; producers of frames (acks, deliveries,
snapshots) only enqueue, so a slow socket delays nobody but itself. What one turn of the
event loop queued for a connection goes out together at the end of that turn: one socket
write for every frame, written there and then while the socket keeps up (its kernel buffer
took everything so far). A connection whose socket is behind is handed to its writer task,
which waits for the socket within ``send_timeout_s`` and cuts the connection off past it.

Waking a writer task for every frame cost more than the frame itself at 2,000 updates/s
(docs/benchmarks.md): an ack, one row to a proctor, each a task switch, a timeout and a
write call of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import defaultdict

import structlog
from aiohttp import WSMsgType, web
from pydantic import BaseModel, TypeAdapter

from adapters.tokens import Identity, StudentIdentity
from domain.send_queue import QueueOverflow, SendQueue
from schemas.views import StudentView
from services.gateway.metrics import GatewayMetrics

log = structlog.get_logger(__name__)

_ROWS: TypeAdapter[list[StudentView]] = TypeAdapter(list[StudentView])

_RESET = struct.pack("ii", 1, 0)
_FIN_TEXT = 0x81
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY_CONNECTS = 4429
CLOSE_SLOW_CONSUMER = 4008
CLOSE_SUPERSEDED = 4009


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        identity: Identity,
        conn_id: str,
        *,
        max_frames: int,
        send_timeout_s: float,
        metrics: GatewayMetrics,
        transport: asyncio.Transport | None = None,
        close_grace_s: float = 2.0,
    ) -> None:
        self.ws = ws
        self._transport = transport
        self._close_grace_s = close_grace_s
        self.identity = identity
        self.id = conn_id
        self.watching: set[str] = set()
        self.close_reason: str | None = None
        self._queue = SendQueue(max_frames)
        self._wake = asyncio.Event()
        self._send_timeout_s = send_timeout_s
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._writing = False
        self._coalesced_seen = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def send(self, frame: BaseModel) -> None:
        self.send_raw(frame.model_dump_json(exclude_none=True).encode())

    def send_raw(self, frame: bytes) -> None:
        if self.close_reason is not None:
            return
        try:
            self._queue.put_frame(frame)
        except QueueOverflow:
            self._metrics.slow_consumers.inc()
            self.close_soon(CLOSE_SLOW_CONSUMER, "slow_consumer")
            return
        self._schedule_flush()

    def send_row(self, view: StudentView) -> None:
        if self.close_reason is None:
            self._queue.put_update(view)
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write what this turn queued, unless the socket is behind: then the writer waits."""
        self._flush_scheduled = False
        transport = self._transport
        if self._writing or transport is None or transport.get_write_buffer_size() > 0:
            self._wake.set()
            return
        if self.ws.closed or transport.is_closing():
            return  # nothing may follow a close frame; the reader ends the connection
        frames = self._drain()
        if frames:
            transport.write(b"".join(text_frame(frame) for frame in frames))

    def forget_exam(self, exam: str) -> None:
        self._queue.drop_exam(exam)

    def close_soon(self, code: int, reason: str) -> None:
        """Close from anywhere without awaiting; the reader loop then ends."""
        if self.close_reason is None:
            self.close_reason = reason
            loop = asyncio.get_running_loop()
            loop.create_task(self._close(code, reason))
            # A peer that does not read never lets the close frame out, and the socket would
            # stay established with megabytes queued; past the grace the socket is dropped.
            loop.call_later(self._close_grace_s, self.abort)

    def abort(self) -> None:
        """Drop the socket now, unread data and all, unless it is already closing."""
        transport = self._transport
        if transport is None:
            return
        # "Closing" is not closed: a graceful close waits for queued bytes the peer will
        # never read, so a closing transport that still holds data is aborted too.
        if not transport.is_closing() or transport.get_write_buffer_size() > 0:
            self._metrics.aborted.inc()
            log.info("socket_aborted", conn=self.id, reason=self.close_reason)
            reset(transport)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(self._send_timeout_s):
                await self.ws.close(code=code, message=reason.encode())

    def _drain(self) -> list[bytes]:
        """Every pending frame, encoded, in order: ordered frames, then the coalesced rows."""
        frames, updates = self._queue.drain()
        coalesced = self._queue.coalesced
        if coalesced != self._coalesced_seen:
            self._metrics.coalesced.inc(coalesced - self._coalesced_seen)
            self._coalesced_seen = coalesced
        for exam, rows in updates.items():
            body = _ROWS.dump_json(rows, exclude_none=True)
            frames.append(b'{"type":"updates","exam":"%s","students":%s}' % (exam.encode(), body))
        return frames

    async def run_writer(self) -> None:
        """Write for a socket that is behind, waiting for it within ``send_timeout_s``."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._writing = True
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    for frame in self._drain():
                        await self.ws.send_frame(frame, WSMsgType.TEXT)
            except TimeoutError:
                self._metrics.slow_consumers.inc()
                self.close_soon(CLOSE_SLOW_CONSUMER, "slow_consumer")
                return
            except ConnectionError:
                return
            finally:
                self._writing = False


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked, uncompressed text frame (RFC 6455 section 5.2), as servers send.

    The gateway's sockets never negotiate compression (``compress=False``), so a frame is
    its header and the payload as is.
    """
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 65536:
        return _PACK_LEN2(_FIN_TEXT, 126, length) + payload
    return _PACK_LEN3(_FIN_TEXT, 127, length) + payload


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection at once: RST, and the kernel frees the bytes it still queued.

    ``abort`` alone closes the socket, but the kernel then keeps it alive (FIN_WAIT) behind
    its unsent bytes for as long as the peer keeps its window shut; linger 0 resets it.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()


class Hub:
    """Who is connected here, indexed the ways deliveries need."""

    def __init__(self) -> None:
        self.all: set[Connection] = set()
        self.by_attempt: dict[str, set[Connection]] = defaultdict(set)
        self.students_by_exam: dict[str, set[Connection]] = defaultdict(set)
        self.watchers: dict[str, set[Connection]] = defaultdict(set)

    def add(self, conn: Connection) -> list[Connection]:
        """Register; returns older connections of the same attempt (to be superseded)."""
        self.all.add(conn)
        identity = conn.identity
        if not isinstance(identity, StudentIdentity):
            return []
        older = list(self.by_attempt[identity.attempt])
        self.by_attempt[identity.attempt].add(conn)
        self.students_by_exam[identity.exam].add(conn)
        return older

    def remove(self, conn: Connection) -> None:
        self.all.discard(conn)
        identity = conn.identity
        if isinstance(identity, StudentIdentity):
            _discard(self.by_attempt, identity.attempt, conn)
            _discard(self.students_by_exam, identity.exam, conn)
        for exam in conn.watching:
            _discard(self.watchers, exam, conn)

    def count(self, role: str) -> int:
        return sum(1 for conn in self.all if conn.identity.role == role)


def _discard(index: dict[str, set[Connection]], key: str, conn: Connection) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[key]
