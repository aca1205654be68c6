"""Batching windows that open only under load: a log reader's fetch window, the id checks'.

A window makes one request carry many records, at the price of the wait; worth it when
records come fast enough to fill it, pure latency when they do not. ``BusyMeter`` tells the
two apart: a rate counted over whole intervals, with hysteresis, so a window does not flap
at the threshold.

Which batching window a log reader asks the broker for, from what its fetches returned:
*idle* (any byte, long wait: the broker answers the first record at once) while the last
fetch was empty or records trickle in slower than ``calm_records_per_s``, *flowing* (the
service's window, short) above that, and *busy* (a longer window) above
``busy_records_per_s``. Every fetch costs the same round trip, broker work and loop
wake-ups whatever it carries. A window of w seconds makes 1/w fetches a second, an eager
fetch one per record (or per burst): below 1/w records a second the window saves no fetch
and only delays each record, above it the window pays. At 2,000 events/s the router's 5 ms
window carried ~10 events, 10 ms carries ~20 and took a sixth off the CPU of the whole
system (docs/benchmarks.md); at 200 events/s 5 ms carried one, as an eager fetch does, but
late.
"""

from __future__ import annotations

from enum import Enum


class Window(Enum):
    IDLE = "idle"
    FLOWING = "flowing"
    BUSY = "busy"


class _Rate:
    """Events per second, counted over whole intervals."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._started: float | None = None
        self._count = 0

    def observe(self, count: int, now: float) -> float | None:
        """Count ``count`` events at ``now``; the rate when this closes an interval, else None."""
        if self._started is None:
            self._started = now
        self._count += count
        elapsed = now - self._started
        if elapsed < self._interval_s:
            return None
        rate = self._count / elapsed
        self._started, self._count = now, 0
        return rate


class _Threshold:
    """Above ``at`` once a rate reaches it, until one falls below ``at * hysteresis``."""

    def __init__(self, at: float, hysteresis: float) -> None:
        self._at = at
        self._below = at * hysteresis
        self.above = False

    def judge(self, rate: float | None) -> bool:
        if rate is not None:
            if rate >= self._at:
                self.above = True
            elif rate < self._below:
                self.above = False
        return self.above


class BusyMeter:
    """Whether events come at least ``busy_per_s`` (0: never busy)."""

    def __init__(
        self, *, busy_per_s: float, interval_s: float = 1.0, hysteresis: float = 0.75
    ) -> None:
        self._rate = _Rate(interval_s) if busy_per_s > 0 else None
        self._busy = _Threshold(busy_per_s, hysteresis)

    def observe(self, count: int, now: float) -> bool:
        """Count ``count`` events at ``now``; busy as judged at the last whole interval."""
        if self._rate is None:
            return False
        return self._busy.judge(self._rate.observe(count, now))


class FetchWindow:
    def __init__(
        self,
        *,
        busy_records_per_s: float,
        calm_records_per_s: float = 0.0,
        interval_s: float = 1.0,
        hysteresis: float = 0.75,
    ) -> None:
        """``busy_records_per_s`` 0: never busy; ``calm_records_per_s`` 0: never calm."""
        self._rate = _Rate(interval_s)
        self._busy = _Threshold(busy_records_per_s, hysteresis) if busy_records_per_s > 0 else None
        self._brisk = _Threshold(calm_records_per_s, hysteresis) if calm_records_per_s > 0 else None

    def observe(self, records: int, now: float) -> Window:
        """The window for the next fetch, after one that returned ``records`` at ``now``."""
        rate = self._rate.observe(records, now)
        busy = self._busy is not None and self._busy.judge(rate)
        brisk = self._brisk is None or self._brisk.judge(rate)
        if records == 0 or not brisk:
            return Window.IDLE
        return Window.BUSY if busy else Window.FLOWING
