"""The simulated student follows the reference client: a heartbeat only after an idle interval."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiohttp

from simulator.clients import StudentBot


class RecordingSocket:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[tuple[float, bytes]] = []

    async def send_bytes(self, frame: bytes) -> None:
        self.sent.append((asyncio.get_running_loop().time(), frame))


async def test_heartbeats_fill_silence_only() -> None:
    ws = RecordingSocket()
    bot = StudentBot(url="ws://unused", token="t", attempt="a1", heartbeat_interval_s=0.2)
    bot._ws = cast(aiohttp.ClientWebSocketResponse, cast(Any, ws))
    beating = asyncio.create_task(bot._heartbeat(bot._ws))
    await asyncio.sleep(0)  # welcome arrived: the first heartbeat goes out
    try:
        for _ in range(8):  # busy: a frame every 0.1 s
            await bot.progress()
            await asyncio.sleep(0.1)
        busy = [frame for _, frame in ws.sent]
        await asyncio.sleep(0.7)  # quiet
    finally:
        ws.closed = True
        beating.cancel()
    assert busy.count(b'{"type":"heartbeat"}') == 1  # the one right after welcome
    quiet = [frame for _, frame in ws.sent][len(busy) :]
    assert 2 <= quiet.count(b'{"type":"heartbeat"}') <= 4
    times = [at for at, _ in ws.sent]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 0.3
