"""Pure rules for hostile or failing peers, with the clock passed in.

- ``FloodMeter``: when a connection that keeps sending over its rate gets closed (1008).
- ``PendingPublish``: a frame is answered once, by ``ack`` or by ``unavailable``.
- ``LogHealth``: whether the log is stalled, so new frames are answered ``unavailable``
  at once instead of each waiting its own deadline.

No I/O and no asyncio: ``session`` feeds them times and acts on the answers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class FloodMeter:
    """Close once more than ``limit`` frames were refused by the rate limit within ``window_s``.

    Counting drops in a row never trips on a fast flood: the token bucket refills between
    two frames and lets one through, which resets the row. A sliding window counts every
    refused frame however the accepted ones interleave; a client that pauses on
    ``rate_limited`` as told stays far below it.
    """

    limit: int
    window_s: float
    _drops: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        # Only the last limit+1 drop times matter: the oldest of them decides.
        self._drops = deque(maxlen=self.limit + 1)

    def dropped(self, now: float) -> bool:
        """Record a refused frame at monotonic ``now``; True when the connection must close."""
        self._drops.append(now)
        return len(self._drops) > self.limit and now - self._drops[0] <= self.window_s


class PendingPublish:
    """One frame's publish: answered at most once, by an ack or by ``unavailable``."""

    __slots__ = ("started", "answered")

    def __init__(self, started: float) -> None:
        self.started = started
        self.answered = False

    def answer(self) -> bool:
        """Claim the one answer; False if the frame was already answered."""
        if self.answered:
            return False
        self.answered = True
        return True


@dataclass
class LogHealth:
    """Whether to try the log at all, shared by every connection of the gateway.

    After a publish missed its deadline (or failed) the log counts as stalled until some
    publish succeeds, late ones included. While stalled, one frame per ``probe_every_s``
    tries the log and every other frame is answered ``unavailable`` at once: without this a
    full producer buffer blocks each connection's read loop for a whole deadline per frame,
    and the frames queued behind it wait minutes for an answer. The interval counts from
    the last failure, so a probe that itself blocked for the whole deadline is not followed
    straight away by another.
    """

    probe_every_s: float
    _stalled: bool = False
    _next_probe: float = field(default=float("-inf"))

    def failed(self, now: float) -> None:
        self._stalled = True
        self._next_probe = max(self._next_probe, now + self.probe_every_s)

    def succeeded(self) -> None:
        self._stalled = False

    @property
    def stalled(self) -> bool:
        return self._stalled

    def admit(self, now: float) -> bool:
        """May a frame try the log at monotonic (loop) time ``now``?"""
        if not self._stalled:
            return True
        if now >= self._next_probe:
            self._next_probe = now + self.probe_every_s
            return True
        return False
