"""Simulated students and proctors speaking the real protocol over real WebSockets.

A ``StudentBot`` behaves like the student client library: it numbers its events, keeps
them until acknowledged, resends them after a reconnect, heartbeats at the interval the
server announces, and obeys pause/resume. A ``ProctorBot`` keeps the dashboard state the
way a proctor page must: snapshot, then rows applied only when their seq is newer.
Both record what the demo, the tests and the benchmarks measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson


def client_session() -> aiohttp.ClientSession:
    """An HTTP session for many WebSockets: aiohttp's default pool stops at 100 connections."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class StudentBot:
    url: str
    token: str
    attempt: str
    total_questions: int = 20
    seq: int = 0
    unacked: dict[str, bytes] = field(default_factory=dict)
    sent_at: dict[int, int] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    notices: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    paused: bool = False
    heartbeat_interval_s: float = 5.0
    question: int = 1
    answered: int = 0
    status: str = "active"
    welcome: dict[str, Any] | None = None
    send_heartbeats: bool = True
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _last_sent: float = 0.0  # loop time of the last frame sent on this connection
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _welcomed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, http: aiohttp.ClientSession, *, timeout_s: float = 10.0) -> None:
        self._welcomed.clear()
        self._ws = await http.ws_connect(f"{self.url}?token={self.token}", autoping=True)
        self._tasks = [asyncio.create_task(self._read(self._ws))]
        async with asyncio.timeout(timeout_s):
            await self._welcomed.wait()
        self._tasks.append(asyncio.create_task(self._heartbeat(self._ws)))
        # Resend whatever the last connection did not get acknowledged, in order.
        for frame in list(self.unacked.values()):
            await self._transmit(frame)

    async def _transmit(self, frame: bytes) -> None:
        """Send on the open connection, if any; every frame counts as a heartbeat."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_bytes(frame)
            self._last_sent = asyncio.get_running_loop().time()

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def close_code(self) -> int | None:
        """How the server closed the current connection (None while open)."""
        return None if self._ws is None or not self._ws.closed else self._ws.close_code

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ws is not None:
            await self._ws.close()

    async def drop(self) -> None:
        """Vanish without a close frame or heartbeats, as a dead network would."""
        self.send_heartbeats = False
        for task in self._tasks:
            task.cancel()

    async def send(self, kind: str, **fields: Any) -> int:
        self.seq += 1
        event_id = f"{self.attempt}-{self.seq}-{uuid.uuid4().hex[:6]}"
        sent = wall_ms()
        frame = orjson.dumps({"type": kind, "id": event_id, "seq": self.seq, "ts": sent, **fields})
        self.unacked[event_id] = frame
        self.sent_at[self.seq] = sent
        await self._transmit(frame)
        return self.seq

    async def set_status(self, status: str) -> int:
        self.status = status
        return await self.send("status", status=status)

    async def progress(self) -> int:
        return await self.send(
            "progress",
            question_current=self.question,
            answered=self.answered,
            total=self.total_questions,
        )

    async def step(self, rng: random.Random) -> int:
        """One realistic action: mostly progress, sometimes away and back, sometimes an answer."""
        roll = rng.random()
        if self.status == "away" or roll < 0.08:
            return await self.set_status("active" if self.status == "away" else "away")
        if roll < 0.3 and self.answered < self.total_questions:
            await self.send("answer", question=self.question, answer=f"choice-{rng.randint(1, 4)}")
            self.answered += 1
            self.question = min(self.total_questions, self.question + 1)
        return await self.progress()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            frame = orjson.loads(message.data)
            match frame["type"]:
                case "welcome":
                    self.welcome = frame
                    self.heartbeat_interval_s = frame["heartbeat_interval_s"]
                    self.paused = bool((frame.get("student") or {}).get("paused"))
                    self._welcomed.set()
                case "ack":
                    self.unacked.pop(frame["id"], None)
                    self.acked.add(frame["id"])
                case "error":
                    self.errors.append(frame)
                case "notice":
                    self.notices.append(frame["event"])
                    kind = frame["event"]["type"]
                    if kind == "proctor.paused":
                        self.paused = True
                    elif kind == "proctor.resumed":
                        self.paused = False

    async def _heartbeat(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """One right after welcome, then one whenever a whole interval passed with nothing else
        sent (any frame keeps the student online, protocol §8), like ``web/client/student.js``."""
        loop = asyncio.get_running_loop()
        while not ws.closed:
            wait = self._last_sent + self.heartbeat_interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self.send_heartbeats:
                await ws.send_bytes(_HEARTBEAT)
            self._last_sent = loop.time()


_HEARTBEAT = b'{"type":"heartbeat"}'


@dataclass
class Received:
    attempt: str
    seq: int
    client_seq: int
    at_ms: int
    written_ms: int = 0  # when the student's gateway stamped the event (its `ts`)


@dataclass
class ProctorBot:
    url: str
    token: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    view_status: list[dict[str, Any]] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    snapshots: int = 0
    out_of_order: int = 0
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None
    _snapshot: asyncio.Event = field(default_factory=asyncio.Event)
    _welcomed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, http: aiohttp.ClientSession, *, timeout_s: float = 10.0) -> None:
        self._welcomed.clear()
        self._ws = await http.ws_connect(f"{self.url}?token={self.token}")
        self._reader = asyncio.create_task(self._read(self._ws))
        async with asyncio.timeout(timeout_s):
            await self._welcomed.wait()

    async def watch(self, exam: str, *, timeout_s: float = 20.0) -> None:
        assert self._ws is not None
        self._snapshot.clear()
        await self._ws.send_bytes(orjson.dumps({"type": "subscribe", "exam": exam}))
        async with asyncio.timeout(timeout_s):
            await self._snapshot.wait()

    async def command(self, kind: str, exam: str, **fields: Any) -> str:
        assert self._ws is not None
        command_id = f"cmd-{uuid.uuid4().hex[:12]}"
        frame = {"type": kind, "id": command_id, "exam": exam, **fields}
        await self._ws.send_bytes(orjson.dumps(frame))
        return command_id

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def _apply(self, row: dict[str, Any], *, live: bool) -> None:
        known = self.rows.get(row["attempt"])
        if known is not None and known["seq"] >= row["seq"]:
            if known["seq"] > row["seq"]:
                self.out_of_order += 1
            return
        self.rows[row["attempt"]] = row
        if live:
            self.received.append(
                Received(
                    row["attempt"],
                    row["seq"],
                    row.get("client_seq", 0),
                    wall_ms(),
                    row.get("updated_at") or 0,
                )
            )

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            frame = orjson.loads(message.data)
            match frame["type"]:
                case "welcome":
                    self._welcomed.set()
                case "snapshot":
                    for row in frame["students"]:
                        self._apply(row, live=False)
                    self.snapshots += 1
                    self._snapshot.set()
                case "updates":
                    for row in frame["students"]:
                        self._apply(row, live=True)
                case "events":
                    self.events.extend(frame["events"])
                case "ack":
                    self.acked.add(frame["id"])
                case "view_status":
                    self.view_status.append(frame)
                case "error":
                    self.errors.append(frame)
                    if frame["code"] == "snapshot_timeout":
                        self._snapshot.set()
