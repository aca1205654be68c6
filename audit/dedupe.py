"""Dropping resent events: the reducer's rule (last ``RECENT_IDS`` ids per attempt).

A client resends unacknowledged events after a reconnect with the same id; the gateway
writes them again. Views drop them by id among the attempt's recent ids, and so does the
export, so memory stays bounded (ids per attempt, not per event of the whole exam).
"""

from __future__ import annotations

from collections import deque

from domain.attempt_state import RECENT_IDS


class RecentIds:
    def __init__(self, per_key: int = RECENT_IDS) -> None:
        self._per_key = per_key
        self._recent: dict[str, tuple[deque[str], set[str]]] = {}
        self.dropped = 0

    def first_time(self, key: str, event_id: str) -> bool:
        """True (and remembered) if ``event_id`` is not among ``key``'s recent ids."""
        entry = self._recent.get(key)
        if entry is None:
            entry = self._recent[key] = (deque(), set())
        order, ids = entry
        if event_id in ids:
            self.dropped += 1
            return False
        order.append(event_id)
        ids.add(event_id)
        if len(order) > self._per_key:
            ids.discard(order.popleft())
        return True


def dedupe_key(exam: str, attempt: str | None) -> str:
    return attempt if attempt is not None else f"exam:{exam}"
