"""Issue 9, the gateway edge: every hostile input of the report against a real gateway.

Each case asserts the documented answer (docs/protocol.md), that a well-behaved student on
the same gateway is still acknowledged, and that nothing wrong reached the log (read back
from the real events topic).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import orjson
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType

from domain.attempt_state import apply
from schemas.views import AttemptState
from services.gateway.app import HUB, PUBLISHER
from tests.conftest import scaled
from tests.hostile.conftest import (
    TCP_ESTABLISHED,
    Connect,
    Gateway,
    masked_text_frame,
    neighbour_is_acked,
    proctor,
    raw_websocket,
    start_gateway,
    student,
    tcp_state,
    upgrade_request,
)
from tests.services.gateway.test_publish import next_frame, read_log

pytestmark = pytest.mark.integration


async def answers(ws: ClientWebSocketResponse, count: int) -> dict[str, list[str]]:
    """Read until ``count`` frames with an id were answered; id -> the answers it got."""
    got: dict[str, list[str]] = {}
    async with asyncio.timeout(scaled(15)):
        while sum(len(v) for v in got.values()) < count:
            frame = orjson.loads((await ws.receive()).data)
            if frame["type"] in ("ack", "error") and "id" in frame:
                got.setdefault(frame["id"], []).append(frame.get("code", "ack"))
    return got


async def closed(ws: ClientWebSocketResponse) -> int | None:
    async with asyncio.timeout(scaled(10)):
        while (await ws.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
            pass
    return ws.close_code


# -- 1 and 2: numbers no view can store, non-strict types, reused ids ------------------------


BAD_FRAMES: list[tuple[str, dict[str, Any]]] = [
    ("score-huge", {"type": "submit", "seq": 1, "score": 1e308}),
    ("score-tiny", {"type": "submit", "seq": 1, "score": 1e-200}),
    ("score-negative", {"type": "submit", "seq": 1, "score": -1}),
    ("seq-string", {"type": "status", "seq": "5", "status": "away"}),
    ("seq-bool", {"type": "status", "seq": True, "status": "away"}),
    ("seq-float", {"type": "status", "seq": 1.0, "status": "away"}),
    ("seq-2-63", {"type": "status", "seq": 2**63, "status": "away"}),
    ("seq-above-safe", {"type": "status", "seq": 2**53, "status": "away"}),
    ("ts-far", {"type": "status", "seq": 1, "ts": 10**16, "status": "away"}),
    ("answered-huge", {"type": "progress", "seq": 1, "answered": 10**12, "total": 10}),
    ("question-huge", {"type": "answer", "seq": 1, "question": 10**9, "answer": "a"}),
    (
        "remaining-huge",
        {"type": "progress", "seq": 1, "answered": 1, "total": 2, "time_remaining_s": 10**10},
    ),
]


async def test_unstorable_numbers_and_loose_types_get_bad_frame_and_never_reach_the_log(
    gateway: Gateway, connect: Connect
) -> None:
    settings, _ = gateway
    neighbour = await connect(student("att-n"))
    await next_frame(neighbour, "welcome")
    ws = await connect(student("att-h"))
    await next_frame(ws, "welcome")
    for frame_id, frame in BAD_FRAMES:
        await ws.send_bytes(orjson.dumps({**frame, "id": frame_id}))
    got = await answers(ws, len(BAD_FRAMES))
    assert got == {frame_id: ["bad_frame"] for frame_id, _ in BAD_FRAMES}
    # The connection is fine: the largest storable seq is acknowledged.
    await ws.send_str(f'{{"type":"status","id":"ok","seq":{2**53 - 1},"status":"active"}}')
    assert await answers(ws, 1) == {"ok": ["ack"]}
    await neighbour_is_acked(neighbour, "n-1", 1)
    await ws.close()
    await neighbour.close()
    logged = {e.id for e in await read_log(settings) if e.type != "student.connected"}
    assert logged == {"ok", "n-1"}


async def test_a_reused_id_with_other_content_is_refused_on_any_gateway(
    gateway: Gateway, connect: Connect, settings: Any
) -> None:
    gateway_settings, _ = gateway
    other_settings, other = await start_gateway(settings, slot=2)
    try:
        neighbour = await connect(student("att-n"))
        await next_frame(neighbour, "welcome")
        ws = await connect(student("att-r"))
        await next_frame(ws, "welcome")
        submit = {"type": "submit", "id": "sub-1", "seq": 7, "score": 12.5}
        await ws.send_bytes(orjson.dumps(submit))
        await ws.send_bytes(orjson.dumps(submit))  # a resend: the same frame
        await ws.send_bytes(orjson.dumps({**submit, "score": 99}))
        # Refusals go out at once, acks once Kafka has the event: compare without order.
        assert sorted((await answers(ws, 3))["sub-1"]) == ["ack", "ack", "id_reused"]
        await ws.close()
        # After a reconnect, through another gateway: the same rule (the ids live in Redis).
        again = await connect(student("att-r"), other)
        await next_frame(again, "welcome")
        await again.send_bytes(orjson.dumps({**submit, "score": 99, "seq": 8}))
        await again.send_bytes(orjson.dumps(submit))
        assert sorted((await answers(again, 2))["sub-1"]) == ["ack", "id_reused"]
        await neighbour_is_acked(neighbour, "n-1", 1)
        await again.close()
        await neighbour.close()
    finally:
        await other.close()
    copies = [e for e in await read_log(gateway_settings) if e.id == "sub-1"]
    assert copies and all(e.type == "student.submitted" and e.score == 12.5 for e in copies)
    assert all(e.client_seq == 7 for e in copies)
    assert other_settings.kafka.events_topic == gateway_settings.kafka.events_topic


# -- 3: a sustained flood is closed ---------------------------------------------------------


async def test_a_flood_at_thousands_of_frames_a_second_is_closed_1008(
    gateway: Gateway, connect: Connect
) -> None:
    settings, _ = gateway
    neighbour = await connect(student("att-n"))
    await next_frame(neighbour, "welcome")
    flooder = await connect(student("att-f"))
    await next_frame(flooder, "welcome")
    started = time.monotonic()
    sent = 0
    try:
        for n in range(1, 7201):
            await flooder.send_str(f'{{"type":"status","id":"f-{n}","seq":{n},"status":"away"}}')
            sent += 1
    except ConnectionError:
        pass  # the gateway closed it under our feet: that is the point
    assert await closed(flooder) == 1008
    assert time.monotonic() - started < scaled(10)
    await neighbour_is_acked(neighbour, "n-1", 1)
    await neighbour.close()
    flood_ids = [e.id for e in await read_log(settings) if e.id.startswith("f-")]
    # Only what the bucket let through (burst 60 plus the refill) reached the log, once each.
    assert len(flood_ids) == len(set(flood_ids)) <= 100 and sent >= 500


# -- 4: the signed deadline wins ------------------------------------------------------------


async def test_the_tokens_deadline_wins_over_the_pages_countdown(
    gateway: Gateway, connect: Connect
) -> None:
    settings, _ = gateway
    time_end = int(time.time() * 1000) + 3_600_000
    ws = await connect(student("att-d", time_end=time_end))
    welcome = await next_frame(ws, "welcome")
    assert welcome["student"]["time_end"] == time_end
    # A page (or a tampered one) claims a week left; the legacy frame claims 2099.
    await ws.send_str(
        '{"type":"progress","id":"p-1","seq":1,"answered":1,"total":5,"time_remaining_s":604800}'
    )
    assert await answers(ws, 1) == {"p-1": ["ack"]}
    legacy = {
        "type": "message_to_master",
        "message": {
            "action": "lmsQuizMonitoringStudent",
            "data": {
                "quiz_id": "exam1",
                "quiz_attempt_id": "att-d",
                "student_id": "stu-att-d",
                "user_status": "active",
                "time_end": time_end + 86_400_000,
            },
        },
    }
    await ws.send_bytes(orjson.dumps(legacy))
    await asyncio.sleep(scaled(0.3))
    await ws.close()
    events = [e for e in await read_log(settings) if e.attempt == "att-d"]
    progress = [e for e in events if e.type == "student.progress"]
    assert len(progress) == 2 and all(e.time_remaining_s is None for e in progress)
    state: AttemptState | None = None
    for offset, event in enumerate(events):
        state = apply(state, event, offset)
    assert state is not None and state.view.time_end == time_end


# -- 5: a stalled log answers every frame within the deadline -------------------------------


class StallingProducer:
    """The real producer, except that while stalled the events topic takes nothing.

    ``block=True``: ``send`` waits (a full producer buffer). ``block=False``: it returns a
    future that resolves only after ``release`` (a broker that stopped answering).
    """

    def __init__(self, real: Any, topic: str) -> None:
        self.real = real
        self.topic = topic
        self.block = False
        self.stalled = asyncio.Event()
        self.running = asyncio.Event()
        self.running.set()
        self.held: list[tuple[bytes, bytes | None, asyncio.Future[Any]]] = []

    def stall(self, *, block: bool) -> None:
        self.block = block
        self.running.clear()

    async def release(self) -> None:
        self.running.set()
        held, self.held = self.held, []
        for value, key, outer in held:
            inner = await self.real.send(self.topic, value, key=key)
            inner.add_done_callback(lambda done, outer=outer: outer.set_result(done.result()))

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> Any:
        if topic != self.topic or self.running.is_set():
            return await self.real.send(topic, value, key=key, partition=partition)
        if self.block:
            await self.running.wait()
            return await self.real.send(topic, value, key=key)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append((value, key, future))
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("block", [False, True], ids=["broker-silent", "buffer-full"])
async def test_a_stalled_log_answers_every_frame_unavailable_within_the_deadline(
    gateway: Gateway, connect: Connect, block: bool
) -> None:
    settings, server = gateway
    publisher = server.app[PUBLISHER]
    stalling = StallingProducer(publisher._producer, settings.kafka.events_topic)
    publisher._producer = stalling
    neighbour = await connect(student("att-n"))
    await next_frame(neighbour, "welcome")
    ws = await connect(student("att-s"))
    await next_frame(ws, "welcome")
    frames = [
        f'{{"type":"answer","id":"s-{n}","seq":{n},"question":{n},"answer":"x"}}'
        for n in range(1, 21)
    ]
    stalling.stall(block=block)
    started = time.monotonic()
    for frame in frames:
        await ws.send_str(frame)
    got = await answers(ws, len(frames))
    # Each frame answered once, unavailable, within a few deadlines (1 s here), not minutes.
    assert got == {f"s-{n}": ["unavailable"] for n in range(1, 21)}
    assert time.monotonic() - started < scaled(5)
    await stalling.release()
    # The client does as told: waits retry_after_ms, resends what is unacknowledged,
    # unchanged. A resend of a frame whose first copy is still queued (or landed late) is
    # answered by that copy: the log gets each event once.
    unacked = dict(zip((f"s-{n}" for n in range(1, 21)), frames, strict=True))
    for _ in range(5):
        await asyncio.sleep(1.0)
        for frame in unacked.values():
            await ws.send_str(frame)
        got = await answers(ws, len(unacked))
        unacked = {i: f for i, f in unacked.items() if got[i] != ["ack"]}
        if not unacked:
            break
    assert not unacked
    await neighbour_is_acked(neighbour, "n-1", 1)
    await ws.close()
    await neighbour.close()
    logged = [e for e in await read_log(settings) if e.id.startswith("s-")]
    assert sorted(e.id for e in logged) == sorted(f"s-{n}" for n in range(1, 21)), "once each"
    assert all(e.client_seq == int(e.id[2:]) and e.question == e.client_seq for e in logged)


# -- 6: connection churn --------------------------------------------------------------------


async def test_connect_churn_is_refused_4429_before_anything_is_logged(
    gateway: Gateway, connect: Connect
) -> None:
    settings, _ = gateway
    neighbour = await connect(student("att-n"))
    await next_frame(neighbour, "welcome")
    token = student("att-c")
    outcomes: list[str] = []
    for _ in range(30):
        ws = await connect(token)
        first = await next_frame(ws)
        if first["type"] == "welcome":
            outcomes.append("welcome")
            await ws.close()
            continue
        assert first["code"] == "too_many_connects" and first["retry_after_ms"] > 0
        assert await closed(ws) == 4429
        outcomes.append("refused")
    assert outcomes == ["welcome"] * 10 + ["refused"] * 20
    await neighbour_is_acked(neighbour, "n-1", 1)
    await neighbour.close()
    connected = [
        e
        for e in await read_log(settings)
        if e.type == "student.connected" and e.attempt == "att-c"
    ]
    assert len(connected) == 10


# -- 7: connection hygiene ------------------------------------------------------------------


async def test_an_upgrade_sent_a_byte_at_a_time_is_cut_off(
    gateway: Gateway, connect: Connect
) -> None:
    _, server = gateway
    assert server.port is not None
    neighbour = await connect(student("att-n"))
    await next_frame(neighbour, "welcome")
    request = upgrade_request(server.port, student("att-slow"))

    async def dribble() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        opened = time.monotonic()
        try:
            for byte in request:
                writer.write(bytes([byte]))
                try:
                    if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                        return time.monotonic() - opened
                except TimeoutError:
                    continue
            raise AssertionError("the whole request went through")
        except ConnectionError:
            return time.monotonic() - opened
        finally:
            writer.close()

    held = await asyncio.gather(*(dribble() for _ in range(50)))
    # Cut off at the handshake timeout (1 s here), long before the request could finish.
    assert max(held) < scaled(3)
    await neighbour_is_acked(neighbour, "n-1", 1)
    await neighbour.close()


async def test_a_proctor_that_never_reads_loses_the_socket_after_4008(
    gateway: Gateway, connect: Connect
) -> None:
    _, server = gateway
    assert server.port is not None
    neighbour = await connect(student("att-n"))
    await next_frame(neighbour, "welcome")
    _, writer, client = await raw_websocket(server.port, proctor(), receive_buffer=4096)
    # The report's proctor had ~3 MB queued in the kernel before the gateway noticed; a
    # small send buffer on the gateway's side of this socket gets there with less traffic.
    async with asyncio.timeout(scaled(5)):
        while not (conns := [c for c in server.app[HUB].all if c.identity.role == "proctor"]):
            await asyncio.sleep(0.01)
    server_socket = conns[0].ws._req.transport.get_extra_info("socket")  # type: ignore[union-attr]
    server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    # Each unknown type is echoed in its error: about 16 KB out for every frame in.
    bulky = masked_text_frame(orjson.dumps({"type": "x" * 15_000}))
    try:
        for _ in range(100):
            writer.write(bulky)
            await asyncio.sleep(0.01)
    except ConnectionError:
        pass
    # Still reading nothing: the gateway decides 4008 after send_timeout_s (1 s here), and
    # a close frame cannot get past the unread data, so only an abort (RST) ends the socket
    # within close_grace_s; a graceful close would leave it established for good.
    async with asyncio.timeout(scaled(8)):
        while tcp_state(client) == TCP_ESTABLISHED:
            await asyncio.sleep(0.05)
    writer.close()
    await neighbour_is_acked(neighbour, "n-1", 1)
    await neighbour.close()
