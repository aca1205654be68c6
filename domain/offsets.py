"""Which log offsets a group consumer may commit: pure, synchronous, no Kafka in sight.

At-least-once means a commit may only cover records whose effects have landed. The rules,
once for every consumer (router, status, notifier alerts):

- Records are handed out in batches (``take``); a batch's records may land in any order
  relative to other batches (``landed``). Per partition the committable offset is the lowest
  offset not yet landed, or one past the last record handed out when everything landed.
- Only assigned partitions are committed, and a partition's commit never moves backwards
  (``committed`` raises the mark; a re-read of history below it cannot lower it).
- A consumer that keeps effects of its own past the batch (status holds DynamoDB writes)
  passes a ``floor``: per partition the lowest offset whose effect is still pending; the
  commit stops there.
- Revocations are numbered. A batch remembers the number current when it was fetched
  (``Lease.epoch``); once a partition is revoked (``revoking``), records of it fetched
  before that are no longer ours: ``keep`` says no, and they no longer hold the commit.
  Records the consumer did keep before the revocation still count when they land, so the
  drain before the final commit covers them. Records of a partition that came back, fetched
  after the revocation, are kept. ``revoked`` then forgets the partition entirely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import count

Span = tuple[int, int]  # first and last offset of a batch's records in one partition


@dataclass(frozen=True, slots=True)
class Lease:
    """One fetched batch: its spans per partition and the revocation number it was fetched
    under. Hashable by identity (``number``)."""

    number: int
    epoch: int
    spans: Mapping[int, Span]


@dataclass(slots=True)
class _Partition:
    # Lease number -> first offset, for each lease of this partition not landed yet.
    open: dict[int, int] = field(default_factory=dict)
    # Leases of this partition the consumer kept (processed) after being asked.
    kept: set[int] = field(default_factory=set)
    next: int = -1  # one past the last offset handed out; -1: nothing handed out
    committed: int = -1  # the highest commit known for this ownership


class OffsetLedger:
    def __init__(self) -> None:
        self._numbers = count(1)
        self._last_number = 0
        self._rewound_at: dict[int, int] = {}
        self._epoch = 0
        self._revoked_at: dict[int, int] = {}
        self._assigned: set[int] = set()
        self._partitions: dict[int, _Partition] = {}

    # -- ownership --------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """How many revocations happened: the number a batch fetched now is stamped with."""
        return self._epoch

    @property
    def assigned(self) -> frozenset[int]:
        return frozenset(self._assigned)

    def assign(self, partitions: Iterable[int]) -> None:
        """The group gave us these partitions (records of them may already have been taken:
        a consumer can hand out a new assignment's records before its callback runs)."""
        self._assigned.update(partitions)

    def revoking(self, partitions: Iterable[int]) -> int:
        """Start a revocation: records of these partitions fetched before it are dropped."""
        self._epoch += 1
        for partition in partitions:
            self._revoked_at[partition] = self._epoch
            state = self._partitions.get(partition)
            if state is None:
                continue
            # Leases nobody kept yet will be dropped: they no longer hold the commit.
            for number in [n for n in state.open if n not in state.kept]:
                del state.open[number]
        return self._epoch

    def revoked(self, partitions: Iterable[int]) -> None:
        """The revocation is done (drained, committed): forget the partitions."""
        for partition in partitions:
            self._assigned.discard(partition)
            self._partitions.pop(partition, None)

    def rewind(self, partition: int, offset: int) -> None:
        """The consumer sought ``partition`` back to ``offset`` (a rebuild from history):
        batches of it taken so far are moot (``keep`` says no to their records of it: they
        were fetched from before the seek), and what it hands out next starts there. The
        commit still never goes below ``committed``."""
        self._rewound_at[partition] = self._last_number
        state = self._partitions.setdefault(partition, _Partition())
        state.open.clear()
        state.kept.clear()
        state.next = offset

    # -- records ----------------------------------------------------------------------------

    def take(self, spans: Mapping[int, Span]) -> Lease:
        """Hand out a fetched batch: its records hold their partitions' commits until landed."""
        lease = Lease(next(self._numbers), self._epoch, dict(spans))
        self._last_number = lease.number
        for partition, (first, last) in spans.items():
            if first > last:
                raise ValueError(f"partition {partition}: span {first}..{last} is empty")
            state = self._partitions.setdefault(partition, _Partition())
            state.open[lease.number] = first
            state.next = max(state.next, last + 1)
        return lease

    def keep(self, lease: Lease, partition: int) -> bool:
        """May the consumer process this lease's records of ``partition``? Asked when it
        processes them; a yes makes them count at landing even if a revocation follows."""
        if self._revoked_at.get(partition, -1) > lease.epoch:
            return False
        if lease.number <= self._rewound_at.get(partition, 0):
            return False
        state = self._partitions.get(partition)
        if state is not None and lease.number in state.open:
            state.kept.add(lease.number)
        return True

    def landed(self, lease: Lease) -> None:
        """Every effect of the lease's records is durable (or, for dropped records, moot)."""
        for partition in lease.spans:
            state = self._partitions.get(partition)
            if state is not None:
                state.open.pop(lease.number, None)
                state.kept.discard(lease.number)

    # -- commits ----------------------------------------------------------------------------

    def committable(self, floor: Mapping[int, int] | None = None) -> dict[int, int]:
        """Offsets to commit now: per assigned partition, past what landed, under ``floor``,
        above the last commit."""
        offsets: dict[int, int] = {}
        for partition in self._assigned:
            state = self._partitions.get(partition)
            if state is None or state.next < 0:
                continue
            offset = min(state.open.values(), default=state.next)
            if floor is not None and partition in floor:
                offset = min(offset, floor[partition])
            if offset > state.committed:
                offsets[partition] = offset
        return offsets

    def committed(self, offsets: Mapping[int, int]) -> None:
        """These commits landed (or are known to be the group's): never commit below them."""
        for partition, offset in offsets.items():
            state = self._partitions.setdefault(partition, _Partition())
            state.committed = max(state.committed, offset)

    def positions(self) -> dict[int, int]:
        """Per assigned partition read from, the next offset to hand out: how far reading got
        (consumer lag is the partition's end minus this)."""
        return {
            partition: state.next
            for partition in self._assigned
            if (state := self._partitions.get(partition)) is not None and state.next >= 0
        }

    def pending(self) -> int:
        """Leases handed out and not landed (or dropped) yet, over all partitions."""
        return len({n for state in self._partitions.values() for n in state.open})
