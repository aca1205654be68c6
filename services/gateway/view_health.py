"""Is what this gateway's proctors see still live? Pure and clock-free.

The router sends each slot with watchers a ``RouterBeat`` every second naming the log
partitions it routes (schemas/deliveries.py). While proctors watch here, a log partition that
no beat has named for ``stale_after_ms`` is not being routed to us: its router is down, the
partition is between owners, or the log itself stalled. Their dashboards keep showing the last
state they had, so they must be told it is stale, and told again when it is live.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.frames import ViewStatusFrame


class ViewHealth:
    def __init__(self, partitions: int, *, stale_after_ms: int) -> None:
        self._partitions = range(partitions)
        self._stale_after_ms = stale_after_ms
        self._last_beat: dict[int, int] = {}
        self._watching_since: int | None = None
        self._stale_since: int | None = None
        self._stale: tuple[int, ...] = ()

    @property
    def status(self) -> ViewStatusFrame | None:
        """The frame a proctor who starts watching now should get (None: live)."""
        if not self._stale:
            return None
        return ViewStatusFrame(
            live=False, stale_partitions=list(self._stale), since=self._stale_since
        )

    def on_beat(self, partitions: Iterable[int], now_ms: int) -> None:
        for partition in partitions:
            self._last_beat[partition] = now_ms

    def check(self, now_ms: int, *, watching: bool) -> ViewStatusFrame | None:
        """The frame to send every watcher when the view changed between live and stale."""
        if not watching:
            # Nobody watches: nobody to tell, and the router beats only slots with watchers.
            self._watching_since = None
            self._stale, self._stale_since = (), None
            return None
        if self._watching_since is None:
            self._watching_since = now_ms
        counts_from = self._watching_since
        stale = tuple(
            p
            for p in self._partitions
            if now_ms - max(self._last_beat.get(p, counts_from), counts_from) > self._stale_after_ms
        )
        if stale == self._stale:
            return None
        was_live = not self._stale
        self._stale = stale
        if not stale:
            self._stale_since = None
            return ViewStatusFrame(live=True, stale_partitions=[], since=None)
        if was_live:
            self._stale_since = now_ms
        return self.status
