"""Polling helpers for end-to-end assertions (every wait scaled by the one test factor)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from tests.conftest import scaled

T = TypeVar("T")


async def eventually(probe: Callable[[], T | None], *, within_s: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + scaled(within_s)
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {scaled(within_s):.1f}s: {what}")
        await asyncio.sleep(0.02)
