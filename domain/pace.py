"""Batching windows that open only under load: a log reader's fetch window, the id checks'.

A window makes one request carry many records, at the price of the wait; worth it when
records come fast enough to fill it, pure latency when they do not. ``BusyMeter`` tells the
two apart: a rate counted over whole intervals, with hysteresis, so a window does not flap
at the threshold.

Which batching window a log reader asks the broker for, from what its fetches returned.

Three windows: *idle* (the last fetch was empty: any byte, long wait, so a quiet log costs a
fetch every half second and the first record after the quiet is fetched at once), *flowing*
(the service's window, short, so a record waits little) and *busy* (a longer window once
records arrive faster than a threshold). Every fetch costs the same round trip, broker work
and loop wake-ups whatever it carries, and at a high rate a longer window fills with more
records for the same wait: at 2,000 events/s the router's 5 ms window carried ~10 events,
10 ms carries ~20 and took a sixth off the CPU of the whole system (docs/benchmarks.md),
while at 200 events/s it would only add latency.
"""

from __future__ import annotations

from enum import Enum


class Window(Enum):
    IDLE = "idle"
    FLOWING = "flowing"
    BUSY = "busy"


class BusyMeter:
    """Whether events come at least ``busy_per_s`` (0: never busy)."""

    def __init__(
        self, *, busy_per_s: float, interval_s: float = 1.0, hysteresis: float = 0.75
    ) -> None:
        self._busy_at = busy_per_s
        self._calm_below = busy_per_s * hysteresis
        self._interval_s = interval_s
        self._started: float | None = None
        self._count = 0
        self.busy = False

    def observe(self, count: int, now: float) -> bool:
        """Count ``count`` events at ``now``; busy as judged at the last whole interval."""
        if self._busy_at <= 0:
            return False
        if self._started is None:
            self._started = now
        self._count += count
        elapsed = now - self._started
        if elapsed >= self._interval_s:
            rate = self._count / elapsed
            if rate >= self._busy_at:
                self.busy = True
            elif rate < self._calm_below:
                self.busy = False
            self._started, self._count = now, 0
        return self.busy


class FetchWindow:
    def __init__(
        self, *, busy_records_per_s: float, interval_s: float = 1.0, hysteresis: float = 0.75
    ) -> None:
        """``busy_records_per_s`` 0 never leaves the flowing window for the busy one."""
        self._meter = BusyMeter(
            busy_per_s=busy_records_per_s, interval_s=interval_s, hysteresis=hysteresis
        )

    def observe(self, records: int, now: float) -> Window:
        """The window for the next fetch, after one that returned ``records`` at ``now``."""
        busy = self._meter.observe(records, now)
        if records == 0:
            return Window.IDLE
        return Window.BUSY if busy else Window.FLOWING
