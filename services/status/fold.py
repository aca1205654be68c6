"""Folding one getmany batch into attempt states: synchronous, no I/O.

The service loads states missing from the cache (``missing``) from Redis first, then
``fold`` runs the shared reducer over the batch. A state loaded from Redis whose seq is at or
past the first offset this batch holds for its attempt is ``ahead_of_log``: Redis took it
from records whose offsets were never committed, so their DynamoDB write may not have landed
either (a crash between the two). The service re-sends such states to DynamoDB; the
conditional write makes that a no-op when it had landed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from domain.attempt_state import apply
from schemas.events import ExamEvent
from schemas.views import AttemptState

AttemptKey = tuple[str, str]  # (exam, attempt)


@dataclass(frozen=True, slots=True)
class LogRecord:
    partition: int
    offset: int
    event: ExamEvent | None  # None: undecodable, skipped but still advances the watermark


@dataclass(slots=True)
class BatchFold:
    changed: dict[AttemptKey, AttemptState] = field(default_factory=dict)
    # Where each changed attempt's first change of this batch is: (partition, offset).
    first_change: dict[AttemptKey, tuple[int, int]] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)


class StateCache:
    """Attempt states in memory, least recently used evicted past ``max_size``.

    Each entry remembers its partition so a revoked partition's states can be forgotten:
    its next owner moves them on, and ours would be stale when the partition comes back.
    Eviction is only safe for states already in Redis, hence the explicit ``trim``.
    """

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._entries: OrderedDict[AttemptKey, tuple[int, AttemptState]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: AttemptKey) -> bool:
        return key in self._entries

    def get(self, key: AttemptKey) -> AttemptState | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def partition_of(self, key: AttemptKey) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: AttemptKey, partition: int, state: AttemptState) -> None:
        self._entries[key] = (partition, state)
        self._entries.move_to_end(key)

    def trim(self) -> None:
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def forget_partitions(self, partitions: set[int]) -> None:
        for key in [k for k, (p, _) in self._entries.items() if p in partitions]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()


def attempt_key(event: ExamEvent) -> AttemptKey | None:
    return None if event.attempt is None else (event.exam, event.attempt)


def missing(records: Iterable[LogRecord], cache: StateCache) -> dict[AttemptKey, tuple[int, int]]:
    """Attempts of the batch not in the cache -> (partition, first offset in the batch)."""
    found: dict[AttemptKey, tuple[int, int]] = {}
    for record in records:
        if record.event is None:
            continue
        key = attempt_key(record.event)
        if key is not None and key not in found and key not in cache:
            found[key] = (record.partition, record.offset)
    return found


def ahead_of_log(loaded: AttemptState, first_offset: int) -> bool:
    return loaded.view.seq >= first_offset


def fold(records: Sequence[LogRecord], cache: StateCache) -> BatchFold:
    """Apply the batch to the cached states; the cache holds the new states afterwards."""
    result = BatchFold()
    marks = result.watermarks
    for record in records:
        if record.offset > marks.get(record.partition, -1):
            marks[record.partition] = record.offset
        event = record.event
        if event is None:
            continue
        key = attempt_key(event)
        if key is None:
            continue  # exam-wide events are facts in the log, not attempt state
        old = cache.get(key)
        new = apply(old, event, record.offset)
        if new is not None and new is not old:
            cache.put(key, record.partition, new)
            result.changed[key] = new
            result.first_change.setdefault(key, (record.partition, record.offset))
    return result
