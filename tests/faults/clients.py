"""Students and proctors that survive faults, written from docs/protocol.md.

``simulator.clients.StudentBot`` connects once; these reconnect (full-jitter backoff, §14),
move to the next gateway when theirs is gone, resend every unacknowledged frame unchanged
after a ``welcome`` (§7.4), after ``unavailable`` (§7.3) and after ``rate_limited`` (§7.7),
paced under the gateway's rate limit, and
record what the fault suite measures: every event's first send, resends and acknowledgement
(monotonic clock), every connection drop, every error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from simulator.clients import wall_ms

WELCOME_TIMEOUT_S = 20.0  # above the gateway's produce_timeout_s (15 s) for student.connected
STABLE_AFTER_S = 10.0  # a connection up this long resets the backoff (§14)
MAX_BACKOFF_S = 30.0
SEND_RATE = 10.0  # event frames a second per connection, under the gateway's 20
SEND_BURST = 20.0


@dataclass
class Sent:
    """One event frame as its client keeps it until acknowledged."""

    frame: bytes
    first_sent: float
    sends: int = 0
    acked_at: float | None = None


def backoff_s(failures: int, rng: random.Random, retry_after_ms: int = 0) -> float:
    delay = rng.uniform(0, min(MAX_BACKOFF_S, 0.5 * 2**failures))
    return max(delay, retry_after_ms / 1000)


@dataclass
class _Client:
    """What students and proctors share: the connection loop and the unacked store."""

    name: str
    urls: tuple[str, ...]
    first_url: int
    token: str
    rng: random.Random
    events: dict[str, Sent] = field(default_factory=dict)
    unacked: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    errors: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[int] = field(default_factory=Counter)
    welcomes: int = 0
    drops: list[float] = field(default_factory=list)  # monotonic times the socket closed
    welcomed: list[float] = field(default_factory=list)  # monotonic times of each welcome
    failed_connects: int = 0
    stopped: bool = False
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _url_index: int = -1
    _welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    refused: Counter[str] = field(default_factory=Counter)  # events dropped after an error
    _retry_after_ms: int = 0
    _due: dict[str, float] = field(default_factory=dict)  # id -> when it may be (re)sent
    _pause_until: float = 0.0

    # -- what subclasses add ----------------------------------------------------------------

    async def on_welcome(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        pass

    def on_frame(self, frame: dict[str, Any]) -> None:
        pass

    def connection_tasks(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task[None]]:
        return []

    # -- connection loop --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed and self._welcomed.is_set()

    @property
    def open_throughout(self) -> bool:
        """One welcome and the socket never closed: the server had no reason to see it go."""
        return self.welcomes == 1 and not self.drops and not self.stopped

    def reconnect_times(self) -> list[float | None]:
        """For each drop, how long until the next welcome (None: never came back)."""
        times: list[float | None] = []
        for dropped in self.drops:
            back = [w for w in self.welcomed if w > dropped]
            times.append(back[0] - dropped if back else None)
        return times

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not self.connected:
                await asyncio.sleep(0.05)

    async def run(self, http: aiohttp.ClientSession) -> None:
        """Stay connected until ``stop``; reconnect with backoff after any loss."""
        failures = 0
        while not self.stopped:
            self._url_index = self.first_url if self._url_index < 0 else self._url_index + 1
            url = self.urls[self._url_index % len(self.urls)]
            up_since = None
            try:
                up_since = await self._session(http, url)
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.failed_connects += 1
            if self.stopped:
                return
            if up_since is not None and time.monotonic() - up_since >= STABLE_AFTER_S:
                failures = 0
            else:
                failures += 1
            await asyncio.sleep(backoff_s(failures, self.rng, self._retry_after_ms))
            self._retry_after_ms = 0

    async def _session(self, http: aiohttp.ClientSession, url: str) -> float | None:
        """One connection; returns when it was welcomed (None if it never was)."""
        self._welcomed.clear()
        ws = await http.ws_connect(
            f"{url}?token={self.token}",
            autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )
        self._ws = ws
        welcomed_at: float | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(WELCOME_TIMEOUT_S):
                first = await ws.receive()
            if first.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.failed_connects += 1
                return None
            frame = orjson.loads(first.data)
            if frame.get("type") != "welcome":
                self._handle(frame)
                self.failed_connects += 1
                return None
            welcomed_at = time.monotonic()
            self.welcomes += 1
            self.welcomed.append(welcomed_at)
            self._welcomed.set()
            await self.on_welcome(ws, frame)
            # Resend every unacknowledged frame unchanged, in order, before anything new
            # (the sender goes through ``unacked`` in order, paced under the rate limit).
            now = time.monotonic()
            self._due = dict.fromkeys(self.unacked, now)
            tasks = [asyncio.get_running_loop().create_task(self._sender(ws))]
            tasks += self.connection_tasks(ws)
            async for message in ws:
                if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                self._handle(orjson.loads(message.data))
            return welcomed_at
        finally:
            self._welcomed.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            if ws.close_code is not None:
                self.close_codes[ws.close_code] += 1
            if welcomed_at is not None and not self.stopped:
                self.drops.append(time.monotonic())
            self._ws = None

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "ack":
            event_id = frame["id"]
            self.unacked.pop(event_id, None)
            self._due.pop(event_id, None)
            sent = self.events.get(event_id)
            if sent is not None and sent.acked_at is None:
                sent.acked_at = time.monotonic()
        elif kind == "error":
            code = frame.get("code", "?")
            self.errors[code] += 1
            retry_s = int(frame.get("retry_after_ms") or 0) / 1000
            event_id = frame.get("id")
            if event_id is None and code not in ("rate_limited", "snapshot_timeout"):
                # At connect (unavailable, too_many_connects): the next attempt waits this long.
                self._retry_after_ms = int(retry_s * 1000)
            elif code == "unavailable":
                if isinstance(event_id, str) and event_id in self.unacked:
                    self._due[event_id] = time.monotonic() + retry_s  # resend unchanged (§7.3)
            elif code == "rate_limited":
                # Frames over the rate were dropped unread: pause, then resend them all (§7.7).
                self._pause_until = time.monotonic() + retry_s
                self._due = dict.fromkeys(self.unacked, self._pause_until)
            elif event_id is not None and event_id in self.unacked:
                # Refused for good (§7.3): resending it unchanged would fail again.
                self.unacked.pop(event_id, None)
                self._due.pop(event_id, None)
                self.refused[code] += 1
        else:
            self.on_frame(frame)

    async def _sender(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send what is due, in the order the events were made, at most ``SEND_RATE`` a
        second (the gateway allows 20 frames a second, heartbeats included)."""
        tokens, last = SEND_BURST, time.monotonic()
        while not ws.closed:
            now = time.monotonic()
            tokens = min(SEND_BURST, tokens + (now - last) * SEND_RATE)
            last = now
            if now >= self._pause_until and self._due:
                for event_id in [i for i in self.unacked if self._due.get(i, now + 1) <= now]:
                    if tokens < 1:
                        break
                    del self._due[event_id]
                    self._count_send(event_id)
                    await ws.send_bytes(self.unacked[event_id])
                    tokens -= 1
            await asyncio.sleep(0.05)

    def _count_send(self, event_id: str) -> None:
        sent = self.events.get(event_id)
        if sent is not None:
            sent.sends += 1

    async def send_event(self, event_id: str, frame: dict[str, Any]) -> None:
        """Keep the frame until its ack; the sender sends it while a connection is up."""
        raw = orjson.dumps(frame)
        self.unacked[event_id] = raw
        self.events[event_id] = Sent(raw, time.monotonic())
        if self._welcomed.is_set():
            self._due[event_id] = time.monotonic()

    async def stop(self) -> None:
        self.stopped = True
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()


@dataclass
class FaultStudent(_Client):
    exam: str = ""
    attempt: str = ""
    quiet: bool = False  # sends nothing but heartbeats once the warm-up is over
    seq: int = 0
    heartbeat_interval_s: float = 5.0
    status: str = "active"
    question: int = 1
    answered: int = 0
    total_questions: int = 30

    async def on_welcome(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        self.heartbeat_interval_s = float(frame.get("heartbeat_interval_s", 5.0))
        last = int((frame.get("student") or {}).get("last_client_seq") or 0)
        self.seq = max(self.seq, last)

    def connection_tasks(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task[None]]:
        return [asyncio.get_running_loop().create_task(self._heartbeats(ws))]

    async def _heartbeats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not ws.closed:
            await ws.send_bytes(b'{"type":"heartbeat"}')
            await asyncio.sleep(self.heartbeat_interval_s)

    async def send(self, kind: str, **fields: Any) -> None:
        self.seq += 1
        event_id = f"{self.attempt}-{self.seq}-{uuid.uuid4().hex[:6]}"
        frame = {"type": kind, "id": event_id, "seq": self.seq, "ts": wall_ms(), **fields}
        await self.send_event(event_id, frame)

    async def step(self) -> None:
        """Mostly progress, sometimes away and back, sometimes an answer."""
        roll = self.rng.random()
        if self.status == "away" or roll < 0.08:
            self.status = "active" if self.status == "away" else "away"
            await self.send("status", status=self.status)
            return
        if roll < 0.3 and self.answered < self.total_questions:
            choice = f"choice-{self.rng.randint(1, 4)}"
            await self.send("answer", question=self.question, answer=choice)
            self.answered += 1
            self.question = min(self.total_questions, self.question + 1)
        await self.send(
            "progress",
            question_current=self.question,
            answered=self.answered,
            total=self.total_questions,
        )


@dataclass
class FaultProctor(_Client):
    exams: tuple[str, ...] = ()
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # attempt -> row
    snapshots: int = 0
    subscribed: set[str] = field(default_factory=set)
    _snapshot_for: dict[str, asyncio.Event] = field(default_factory=dict)
    _timeouts: set[str] = field(default_factory=set)
    _snapshot_retry_ms: int = 0

    async def on_welcome(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        self.subscribed.clear()

    def connection_tasks(self, ws: aiohttp.ClientWebSocketResponse) -> list[asyncio.Task[None]]:
        return [asyncio.get_running_loop().create_task(self._subscribe_all(ws))]

    async def _subscribe_all(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Subscribe to every exam, one at a time; retry a ``snapshot_timeout`` with backoff."""
        for exam in self.exams:
            failures = 0
            while not ws.closed and exam not in self.subscribed:
                done = self._snapshot_for[exam] = asyncio.Event()
                self._timeouts.discard(exam)
                await ws.send_bytes(orjson.dumps({"type": "subscribe", "exam": exam}))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        await done.wait()
                if exam in self.subscribed:
                    break
                failures += 1
                await asyncio.sleep(backoff_s(failures, self.rng, self._snapshot_retry_ms))

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "snapshot":
            exam = frame["exam"]
            for attempt in [a for a, row in self.rows.items() if row["exam"] == exam]:
                del self.rows[attempt]
            for row in frame["students"]:
                self._apply(row)
            self.snapshots += 1
            self.subscribed.add(exam)
            if exam in self._snapshot_for:
                self._snapshot_for[exam].set()
        elif kind == "updates":
            if frame["exam"] in self.subscribed:
                for row in frame["students"]:
                    self._apply(row)
        elif kind == "error" and frame.get("code") == "snapshot_timeout":
            for event in self._snapshot_for.values():
                event.set()

    def _handle(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "error" and frame.get("code") == "snapshot_timeout":
            self.errors["snapshot_timeout"] += 1
            self._snapshot_retry_ms = int(frame.get("retry_after_ms") or 0)
            self.on_frame(frame)
            return
        super()._handle(frame)

    def _apply(self, row: dict[str, Any]) -> None:
        known = self.rows.get(row["attempt"])
        if known is None or known["seq"] < row["seq"]:
            self.rows[row["attempt"]] = row

    async def command(self, kind: str, exam: str, **fields: Any) -> None:
        command_id = f"cmd-{uuid.uuid4().hex[:16]}"
        await self.send_event(command_id, {"type": kind, "id": command_id, "exam": exam, **fields})
