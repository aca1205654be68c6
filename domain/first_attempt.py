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

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from itertools import chain

from schemas.views import StudentView

ItemKey = tuple[str, str]
Position = tuple[int, int]  # (log partition, offset) of the record that made a change


def item_key(view: StudentView) -> ItemKey:
    return (view.exam, view.student)


def supersedes(candidate: StudentView, holder: StudentView | None) -> bool:
    """True if ``candidate`` must replace ``holder`` as the item of its (exam, student)."""
    if holder is None:
        return True
    if holder.attempt == candidate.attempt:
        return holder.seq < candidate.seq
    return holder.attempt_no > candidate.attempt_no


class LowestOffsets:
    """Per partition, the lowest of the offsets some owners hold, kept up to date as they move.

    Each owner (a waiting item) holds at most one offset per partition. The log's commit
    floor is read at every commit while thousands of items wait for a write budget; taking
    the minimum over all of them each time cost more than the rest of the service's
    bookkeeping. Here a read is a heap top per partition: offsets an owner let go stay in the
    heap until they reach the top and are dropped there.
    """

    def __init__(self) -> None:
        self._held: dict[Hashable, dict[int, int]] = {}
        self._counts: dict[int, dict[int, int]] = {}
        self._heaps: dict[int, list[int]] = {}

    def hold(self, owner: Hashable, positions: dict[int, int] | None) -> None:
        """``owner`` now holds exactly ``positions`` (None or empty: nothing)."""
        old = self._held.pop(owner, None)
        if old == positions:
            if old:
                self._held[owner] = old
            return
        if old:
            for partition, offset in old.items():
                self._release(partition, offset)
        if positions:
            self._held[owner] = dict(positions)
            for partition, offset in positions.items():
                self._take(partition, offset)

    def lowest(self) -> dict[int, int]:
        lowest: dict[int, int] = {}
        for partition, heap in self._heaps.items():
            counts = self._counts.get(partition, {})
            while heap and heap[0] not in counts:
                heapq.heappop(heap)
            if heap:
                lowest[partition] = heap[0]
        return lowest

    def _take(self, partition: int, offset: int) -> None:
        counts = self._counts.setdefault(partition, {})
        held = counts.get(offset, 0)
        counts[offset] = held + 1
        if held == 0:
            heap = self._heaps.setdefault(partition, [])
            heapq.heappush(heap, offset)
            if len(heap) > 2 * len(counts) + 64:
                # Offsets let go below the top pile up; rebuild from what is held.
                heap[:] = list(counts)
                heapq.heapify(heap)

    def _release(self, partition: int, offset: int) -> None:
        counts = self._counts[partition]
        held = counts[offset] - 1
        if held:
            counts[offset] = held
        else:
            del counts[offset]


class FirstAttemptBuffer:
    """States waiting for their DynamoDB write, at most one per item (the one that would win).

    ``stage`` keeps, per (exam, student), the candidate that supersedes the others: for one
    attempt that is its latest state, across attempts the lowest attempt number. A candidate
    that loses to the item's known holder is dropped (counted in ``skipped``), so a later
    attempt's updates cost no write per flush. ``memo_size`` bounds the known holders.

    Items drain oldest first (by when they were first staged), so a partial drain (a write
    budget) bounds how long any item waits; a submitted attempt's final state jumps the line
    (it is what the LMS reads next). Each waiting or in-flight item remembers the log
    position of its oldest unwritten change; ``floor`` gives, per partition, the lowest of
    them: the log may be committed up to there and no further, or a restart would skip a
    change that never reached DynamoDB.
    """

    def __init__(
        self, *, memo_size: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pending: OrderedDict[ItemKey, StudentView] = OrderedDict()
        # When each waiting (or in-flight) item was first staged: the backlog's age, which
        # operators alert on (a write budget or a slow table lets it grow).
        self._staged_at: dict[ItemKey, float] = {}
        self._flying_since: dict[ItemKey, float] = {}
        self._clock = clock
        # Per item, per partition (a later attempt may sit on another one): lowest offset.
        self._since: dict[ItemKey, dict[int, int]] = {}
        self._in_flight: dict[ItemKey, dict[int, int]] = {}
        # Per item, the lower of the two above: what holds the log's commit back.
        self._lowest = LowestOffsets()
        self._holders: OrderedDict[ItemKey, StudentView] = OrderedDict()
        self._memo_size = memo_size
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def stage(self, view: StudentView, position: Position | None = None) -> bool:
        """Queue ``view`` for a write; False if it can never win (dropped)."""
        if self._offer(view, position):
            return True
        self.skipped += 1
        return False

    def _offer(self, view: StudentView, position: Position | None) -> bool:
        key = item_key(view)
        holder = self._holders.get(key)
        if holder is not None and not supersedes(view, holder):
            return False
        queued = self._pending.get(key)
        if queued is not None and not supersedes(view, queued):
            return False
        # Assigning an existing key keeps its place: the item stays as old as its first change.
        self._pending[key] = view
        self._staged_at.setdefault(key, self._clock())
        if view.submitted:
            self._pending.move_to_end(key, last=False)
        if position is not None:
            _merge(self._since.setdefault(key, {}), {position[0]: position[1]})
            self._sync(key)
        return True

    def _sync(self, key: ItemKey) -> None:
        """Re-register what ``key`` holds back after its positions changed."""
        since = self._since.get(key)
        flying = self._in_flight.get(key)
        if since and flying:
            combined = dict(since)
            _merge(combined, flying)
            self._lowest.hold(key, combined)
        else:
            self._lowest.hold(key, since or flying)

    def drain(self, limit: int | None = None) -> list[StudentView]:
        """The ``limit`` oldest staged items (all by default), now in flight until ``landed``."""
        if limit is None or limit >= len(self._pending):
            keys = list(self._pending)
        else:
            keys = [key for key, _ in zip(self._pending, range(max(limit, 0)), strict=False)]
        views = [self._pending.pop(key) for key in keys]
        for key in keys:
            since = self._since.pop(key, None)
            if since is not None:
                _merge(self._in_flight.setdefault(key, {}), since)
                self._sync(key)
            staged_at = self._staged_at.pop(key, None)
            if staged_at is not None:
                self._flying_since[key] = min(self._flying_since.get(key, staged_at), staged_at)
        return views

    def landed(self, views: Iterable[StudentView]) -> None:
        """These writes are settled (written or refused): they no longer hold the log back."""
        for view in views:
            key = item_key(view)
            if self._in_flight.pop(key, None) is not None:
                self._sync(key)
            self._flying_since.pop(key, None)

    def restage(self, views: list[StudentView]) -> None:
        """Put back writes that did not land; newer staged states of the same item still win."""
        for view in views:
            key = item_key(view)
            since = self._in_flight.pop(key, None)
            waiting_since = self._flying_since.pop(key, None)
            holder = self._holders.get(key)
            if holder is not None and not supersedes(view, holder):
                self._sync(key)
                continue  # it landed (or lost) before the flush was cut short: settled
            self._offer(view, None)
            if waiting_since is not None and key in self._pending:
                self._staged_at[key] = min(self._staged_at.get(key, waiting_since), waiting_since)
            if since is not None:
                # Kept even when a newer state won: that older change is still not written.
                _merge(self._since.setdefault(key, {}), since)
            self._sync(key)

    def oldest_wait_s(self) -> float:
        """How long the longest-waiting unwritten item has waited (0 when none waits)."""
        oldest = min(chain(self._staged_at.values(), self._flying_since.values()), default=None)
        return 0.0 if oldest is None else max(self._clock() - oldest, 0.0)

    def floor(self) -> dict[int, int]:
        """Per partition, the lowest log offset whose change is not yet in DynamoDB."""
        return self._lowest.lowest()

    def forget_partitions(self, partitions: set[int]) -> None:
        """Their positions mean nothing once another worker owns them (views stay queued)."""
        touched: set[ItemKey] = set()
        for by_item in (self._since, self._in_flight):
            for key, positions in list(by_item.items()):
                gone = partitions & positions.keys()
                if not gone:
                    continue
                touched.add(key)
                for partition in gone:
                    del positions[partition]
                if not positions:
                    del by_item[key]
        for key in touched:
            self._sync(key)

    def note_holder(self, holder: StudentView) -> None:
        """Remember what the store holds for an item (after a write landed or was refused)."""
        key = item_key(holder)
        known = self._holders.get(key)
        if known is None or supersedes(holder, known):
            self._holders[key] = holder
        self._holders.move_to_end(key)
        while len(self._holders) > self._memo_size:
            self._holders.popitem(last=False)


def _merge(into: dict[int, int], positions: dict[int, int]) -> None:
    for partition, offset in positions.items():
        if offset < into.get(partition, offset + 1):
            into[partition] = offset
