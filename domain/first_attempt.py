"""Which attempt's state the DynamoDB item of an (exam, student) holds, and write coalescing.

The item holds the student's FIRST attempt. ``supersedes`` is the one rule, shared by the
store's conditional write (``adapters.dynamo_store``), its in-memory fake, and the coalescing
below, so all three agree: a candidate takes the item if the item is absent, holds the same
attempt at a lower seq, or holds a later attempt number (an earlier attempt processed late
wins its place back). Anything else is a replay, a duplicate or a later attempt: no write.

The rule is monotone: once a candidate loses to a holder it loses to every later holder too
(holders only ever move to a lower attempt number or a higher seq of the same attempt). That
is what makes it safe to drop a candidate that loses to a holder we saw earlier, without
asking the store again (``FirstAttemptBuffer`` with its memo of known holders). This holds
as long as an attempt's number never changes, which it does not: ``student.connected``
(carrying it) is the first event of every attempt in the log.
"""

from __future__ import annotations

from collections import OrderedDict

from schemas.views import StudentView

ItemKey = tuple[str, str]


def item_key(view: StudentView) -> ItemKey:
    return (view.exam, view.student)


def supersedes(candidate: StudentView, holder: StudentView | None) -> bool:
    """True if ``candidate`` must replace ``holder`` as the item of its (exam, student)."""
    if holder is None:
        return True
    if holder.attempt == candidate.attempt:
        return holder.seq < candidate.seq
    return holder.attempt_no > candidate.attempt_no


class FirstAttemptBuffer:
    """States waiting for their DynamoDB write, at most one per item (the one that would win).

    ``stage`` keeps, per (exam, student), the candidate that supersedes the others: for one
    attempt that is its latest state, across attempts the lowest attempt number. A candidate
    that loses to the item's known holder is dropped (counted in ``skipped``), so a later
    attempt's updates cost no write per flush. ``memo_size`` bounds the known holders.
    """

    def __init__(self, *, memo_size: int = 100_000) -> None:
        self._pending: dict[ItemKey, StudentView] = {}
        self._holders: OrderedDict[ItemKey, StudentView] = OrderedDict()
        self._memo_size = memo_size
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def stage(self, view: StudentView) -> bool:
        """Queue ``view`` for a write; False if it can never win (dropped)."""
        if self._offer(view):
            return True
        self.skipped += 1
        return False

    def _offer(self, view: StudentView) -> bool:
        key = item_key(view)
        holder = self._holders.get(key)
        if holder is not None and not supersedes(view, holder):
            return False
        queued = self._pending.get(key)
        if queued is not None and not supersedes(view, queued):
            return False
        self._pending[key] = view
        return True

    def drain(self) -> list[StudentView]:
        """Everything staged, in staging order; the buffer is empty afterwards."""
        views = list(self._pending.values())
        self._pending.clear()
        return views

    def restage(self, views: list[StudentView]) -> None:
        """Put back writes that did not land; newer staged states of the same item still win."""
        for view in views:
            self._offer(view)

    def note_holder(self, holder: StudentView) -> None:
        """Remember what the store holds for an item (after a write landed or was refused)."""
        key = item_key(holder)
        known = self._holders.get(key)
        if known is None or supersedes(holder, known):
            self._holders[key] = holder
        self._holders.move_to_end(key)
        while len(self._holders) > self._memo_size:
            self._holders.popitem(last=False)
