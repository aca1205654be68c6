"""A gateway's live view of one watched exam, and the gap-free handshake that builds it.

Pure and synchronous. Life of a view: ``syncing`` (delivery items for the exam are buffered,
``WatchReady`` replies collect the router's positions) -> ``load(snapshot)`` -> ``live``
(items apply in order). A snapshot is acceptable once its watermarks reach the router's
positions; then every event is in the snapshot or in the buffer, and the per-attempt seq
drops the overlap. See docs/architecture.md, "Watching an exam without a gap".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from domain.attempt_state import apply
from schemas.deliveries import ForProctors, WatchReady
from schemas.events import ExamEvent
from schemas.views import AttemptState, StudentView

# Events proctors see as timeline entries, beside the state rows they change.
NOTABLE_TYPES = frozenset(
    {
        "student.answer",
        "student.submitted",
        "student.offline",
        "student.back_online",
        "proctor.message",
        "proctor.announcement",
        "proctor.paused",
        "proctor.resumed",
        "proctor.time_extended",
        "alert.raised",
    }
)


@dataclass(frozen=True)
class Applied:
    """What one delivery item changed: a row to push, and/or a timeline event."""

    row: StudentView | None
    notable: ExamEvent | None


@dataclass
class ExamView:
    exam: str
    request: str
    log_partitions: int
    positions: dict[int, int] = field(default_factory=dict)
    states: dict[str, AttemptState] = field(default_factory=dict)
    buffer: list[ForProctors] = field(default_factory=list)
    live: bool = False

    def on_ready(self, ready: WatchReady) -> None:
        if ready.request == self.request:
            self.positions.update(ready.positions)

    @property
    def router_ready(self) -> bool:
        return len(self.positions) >= self.log_partitions

    def snapshot_fresh(self, watermarks: dict[int, int]) -> bool:
        return all(watermarks.get(p, -1) >= offset for p, offset in self.positions.items())

    def load(self, snapshot: Iterable[AttemptState]) -> list[Applied]:
        """Go live from a fresh snapshot; returns what the buffered items changed on top."""
        self.states = {state.view.attempt: state for state in snapshot}
        buffered, self.buffer = self.buffer, []
        self.live = True
        return [self.apply(item) for item in buffered]

    def offer(self, item: ForProctors) -> Applied | None:
        """Take a delivery item: buffered while syncing (None), applied once live."""
        if not self.live:
            self.buffer.append(item)
            return None
        return self.apply(item)

    def apply(self, item: ForProctors) -> Applied:
        event = item.event
        row: StudentView | None = None
        if event.attempt is not None:
            old = self.states.get(event.attempt)
            new = apply(old, event, item.offset)
            if new is not None and new is not old:
                self.states[event.attempt] = new
                row = new.view
            elif old is not None and (item.offset <= old.view.seq or event.id in old.recent_ids):
                # Already in the snapshot (its timeline entry was before this proctor came),
                # or a client's resend logged twice: the first copy was surfaced already.
                return Applied(row=None, notable=None)
        notable = event if event.type in NOTABLE_TYPES else None
        return Applied(row=row, notable=notable)

    def rows(self) -> list[StudentView]:
        return [state.view for state in self.states.values()]
