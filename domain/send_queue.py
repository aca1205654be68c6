"""A connection's bounded outgoing queue: ordered frames plus per-student coalescing.

A slow proctor must never slow anyone else, and must never make the gateway's memory
grow without bound. Student rows coalesce (only the newest state of each student is kept,
it carries its seq), so their share is bounded by the number of students watched; other
frames (acks, errors, snapshots, notices, events) keep their order and are bounded by
``max_frames``: a consumer that falls that far behind is cut off to resync.
"""

from __future__ import annotations

from collections import deque

from schemas.views import StudentView


class QueueOverflow(Exception):
    """The consumer is too slow: more than ``max_frames`` ordered frames are pending."""


class SendQueue:
    def __init__(self, max_frames: int) -> None:
        self._max_frames = max_frames
        self._frames: deque[bytes] = deque()
        self._updates: dict[str, dict[str, StudentView]] = {}
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._frames) + sum(len(rows) for rows in self._updates.values())

    def put_frame(self, frame: bytes) -> None:
        if len(self._frames) >= self._max_frames:
            raise QueueOverflow(f"{len(self._frames)} frames pending")
        self._frames.append(frame)

    def put_update(self, view: StudentView) -> None:
        rows = self._updates.setdefault(view.exam, {})
        previous = rows.get(view.attempt)
        if previous is not None:
            if previous.seq >= view.seq:
                return
            self.coalesced += 1
        rows[view.attempt] = view

    def drain(self) -> tuple[list[bytes], dict[str, list[StudentView]]]:
        """Everything pending: ordered frames first, then the latest row per student."""
        frames = list(self._frames)
        self._frames.clear()
        updates = {exam: list(rows.values()) for exam, rows in self._updates.items() if rows}
        self._updates.clear()
        return frames, updates

    def drop_exam(self, exam: str) -> None:
        self._updates.pop(exam, None)
