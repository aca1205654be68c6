"""Exponential backoff with jitter: how long to wait before asking again after a failure.

Written once for every loop that retries an outage (a log reader's fetches and dead
letters, the router's start offsets, the status service's store writes and log positions,
the notifier's writes and its alerts rewind): the wait doubles after each failure up to
``maximum_s`` and starts again from ``initial_s`` after a success. Each wait is drawn from its
upper half, so processes that failed together do not ask again together.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self._initial_s = initial_s
        self._maximum_s = maximum_s
        self._delay_s = initial_s

    def next(self) -> float:
        """The wait before the next attempt; the one after it is twice as long."""
        wait = self._delay_s * random.uniform(0.5, 1.0)
        self._delay_s = min(self._delay_s * 2, self._maximum_s)
        return wait

    def reset(self) -> None:
        self._delay_s = self._initial_s
