"""Who gets which log event: the router's decisions, pure and synchronous.

``RoutingTable`` is fed the presence topic record by record (key, decoded value or ``None``
for a tombstone) and answers, for a log event, which gateway slots get it:

- every event of exam E goes to each slot with a live ``ExamWatch`` for E (``ForProctors``);
- a proctor command for an attempt (message, pause, resume, time extension) also goes to
  each slot holding a connection of that attempt (``ForStudents``); an exam-wide
  announcement goes to each slot holding any student of the exam;
- ``GatewayUp`` of a new instance voids the slot's watches and connections of older
  instances, and later records of those instances are ignored.

The hot path uses ``targets`` on an ``EventHead`` (the three fields routing needs, parsed
without validating the whole event); ``route`` renders the same decisions as delivery
items for callers that hold a decoded event.

``PartitionPositions`` keeps, per log partition owned, the offset of the last event routed
(or the start position minus one), which is what ``WatchReady.positions`` promises.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from schemas.deliveries import DeliveryItem, ForProctors, ForStudents, WatchReady
from schemas.events import ExamEvent
from schemas.presence import ExamWatch, GatewayUp, PresenceRecord, StudentConnection

# Proctor commands for one attempt that the student's page must receive.
STUDENT_COMMANDS = frozenset(
    {"proctor.message", "proctor.paused", "proctor.resumed", "proctor.time_extended"}
)
ANNOUNCEMENT = "proctor.announcement"
_CACHE_LIMIT = 4096


class BadEvent(ValueError):
    """A log value that lacks what routing needs (not JSON, no exam, wrong types)."""


@dataclass(frozen=True, slots=True)
class EventHead:
    """The part of a log event routing looks at."""

    exam: str
    attempt: str | None
    type: str

    @classmethod
    def parse(cls, raw: bytes) -> EventHead:
        """Read exam, attempt and type from a raw log value without validating the rest."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadEvent(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise BadEvent("not a JSON object")
        exam, attempt, kind = doc.get("exam"), doc.get("attempt"), doc.get("type")
        if not isinstance(exam, str) or not exam:
            raise BadEvent("no exam")
        if attempt is not None and not isinstance(attempt, str):
            raise BadEvent("attempt is not a string")
        if not isinstance(kind, str):
            raise BadEvent("no type")
        return cls(exam, attempt, kind)

    @classmethod
    def of(cls, event: ExamEvent) -> EventHead:
        return cls(event.exam, event.attempt, event.type)


@dataclass(frozen=True, slots=True)
class Targets:
    """Slots that get the event for their proctors, and slots that get it for students."""

    proctors: tuple[int, ...] = ()
    students: tuple[int, ...] = ()


NOBODY = Targets()


@dataclass(frozen=True, slots=True)
class WatchStarted:
    """A watch the router must confirm with ``WatchReady`` (once it knows its positions)."""

    slot: int
    exam: str
    request: str

    def ready(self, positions: Mapping[int, int]) -> WatchReady:
        return WatchReady(exam=self.exam, request=self.request, positions=dict(positions))


@dataclass(frozen=True, slots=True)
class _Watch:
    instance: str
    request: str


@dataclass(frozen=True, slots=True)
class _Connection:
    slot: int
    instance: str
    exam: str
    attempt: str


def _parse_watch_key(key: str) -> tuple[int, str] | None:
    # sub/<slot>/<exam>; ids cannot contain "/" (schemas.events.Id)
    parts = key.split("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        return None
    return int(parts[1]), parts[2]


class RoutingTable:
    """Presence folded into routing maps. Feed it the presence topic in order."""

    def __init__(self) -> None:
        self._instances: dict[int, str] = {}
        # exam -> slot -> watch; the dict per exam is what routing reads
        self._watches: dict[str, dict[int, _Watch]] = {}
        self._connections: dict[str, _Connection] = {}
        # attempt -> slot -> live connections; exam -> slot -> live connections
        self._attempt_slots: dict[str, Counter[int]] = {}
        self._exam_student_slots: dict[str, Counter[int]] = {}
        # Routing results per (exam, attempt, kind-class) are cached until presence changes:
        # the log repeats the same few heads thousands of times per second.
        self._cache: dict[tuple[str, str | None, int], Targets] = {}

    # -- presence ------------------------------------------------------------------------

    def apply(self, key: bytes | str, record: PresenceRecord | None) -> list[WatchStarted]:
        """Fold one presence record in; return the watches that just began or changed."""
        name = key.decode() if isinstance(key, bytes) else key
        self._cache.clear()
        if name.startswith("sub/"):
            return self._apply_watch(name, record)
        if name.startswith("conn/"):
            self._apply_connection(name[len("conn/") :], record)
        elif name.startswith("gw/") and isinstance(record, GatewayUp):
            self._gateway_up(record)
        elif name.startswith("gw/") and record is None and name[3:].isdigit():
            self._instances.pop(int(name[3:]), None)
        # att/ verdicts and anything unknown do not affect routing.
        return []

    def _stale(self, slot: int, instance: str) -> bool:
        known = self._instances.get(slot)
        return known is not None and known != instance

    def _apply_watch(self, key: str, record: PresenceRecord | None) -> list[WatchStarted]:
        parsed = _parse_watch_key(key)
        if parsed is None:
            return []
        slot, exam = parsed
        if record is None:
            self._drop_watch(slot, exam)
            return []
        if not isinstance(record, ExamWatch) or self._stale(slot, record.instance):
            return []
        # The key names the slot and exam the record is filed under; trust the key so a
        # later tombstone of the same key removes exactly this entry.
        watch = _Watch(record.instance, record.request)
        by_slot = self._watches.setdefault(exam, {})
        if by_slot.get(slot) == watch:
            return []
        by_slot[slot] = watch
        return [WatchStarted(slot, exam, record.request)]

    def _drop_watch(self, slot: int, exam: str) -> None:
        by_slot = self._watches.get(exam)
        if by_slot is not None:
            by_slot.pop(slot, None)
            if not by_slot:
                del self._watches[exam]

    def _apply_connection(self, conn: str, record: PresenceRecord | None) -> None:
        self._drop_connection(conn)
        if isinstance(record, StudentConnection) and not self._stale(record.slot, record.instance):
            entry = _Connection(record.slot, record.instance, record.exam, record.attempt)
            self._connections[conn] = entry
            self._attempt_slots.setdefault(entry.attempt, Counter())[entry.slot] += 1
            self._exam_student_slots.setdefault(entry.exam, Counter())[entry.slot] += 1
        # StudentDisconnection, a tombstone, a stale instance: the connection is gone.

    def _drop_connection(self, conn: str) -> None:
        entry = self._connections.pop(conn, None)
        if entry is None:
            return
        _decrement(self._attempt_slots, entry.attempt, entry.slot)
        _decrement(self._exam_student_slots, entry.exam, entry.slot)

    def _gateway_up(self, record: GatewayUp) -> None:
        slot, instance = record.slot, record.instance
        self._instances[slot] = instance
        for exam in list(self._watches):
            watch = self._watches[exam].get(slot)
            if watch is not None and watch.instance != instance:
                self._drop_watch(slot, exam)
        for conn in [
            conn
            for conn, entry in self._connections.items()
            if entry.slot == slot and entry.instance != instance
        ]:
            self._drop_connection(conn)

    # -- queries -------------------------------------------------------------------------

    def targets(self, head: EventHead) -> Targets:
        """Which slots get this event, for proctors and for students."""
        if head.type in STUDENT_COMMANDS and head.attempt is not None:
            student_kind = 1
        elif head.type == ANNOUNCEMENT and head.attempt is None:
            student_kind = 2
        else:
            student_kind = 0
        cache_key = (head.exam, head.attempt if student_kind == 1 else None, student_kind)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        proctors = tuple(sorted(self._watches.get(head.exam, ())))
        students: tuple[int, ...] = ()
        if student_kind == 1:
            students = _slots(self._attempt_slots.get(head.attempt or ""))
        elif student_kind == 2:
            students = _slots(self._exam_student_slots.get(head.exam))
        targets = Targets(proctors, students) if proctors or students else NOBODY
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[cache_key] = targets
        return targets

    def route(self, event: ExamEvent, partition: int, offset: int) -> dict[int, list[DeliveryItem]]:
        """The delivery items per slot for one decoded log event."""
        targets = self.targets(EventHead.of(event))
        items: dict[int, list[DeliveryItem]] = {}
        if targets.proctors:
            for_proctors = ForProctors(
                exam=event.exam, partition=partition, offset=offset, event=event
            )
            for slot in targets.proctors:
                items.setdefault(slot, []).append(for_proctors)
        if targets.students:
            for_students = ForStudents(
                exam=event.exam,
                attempt=event.attempt,
                partition=partition,
                offset=offset,
                event=event,
            )
            for slot in targets.students:
                items.setdefault(slot, []).append(for_students)
        return items

    def watches(self) -> list[WatchStarted]:
        """Every live watch, to confirm again when this worker takes over partitions."""
        return [
            WatchStarted(slot, exam, watch.request)
            for exam, by_slot in self._watches.items()
            for slot, watch in by_slot.items()
        ]

    def counts(self) -> tuple[int, int]:
        """(live watches, live student connections), for metrics."""
        return sum(len(by_slot) for by_slot in self._watches.values()), len(self._connections)


def _decrement(index: dict[str, Counter[int]], name: str, slot: int) -> None:
    slots = index.get(name)
    if slots is None:
        return
    slots[slot] -= 1
    if slots[slot] <= 0:
        del slots[slot]
    if not slots:
        del index[name]


def _slots(counter: Counter[int] | None) -> tuple[int, ...]:
    return tuple(sorted(counter)) if counter else ()


class PartitionPositions:
    """Per owned log partition: the offset of the last event routed, else start - 1.

    ``assigned`` takes the first offset this worker reads from each partition (the group's
    committed offset, or the earliest offset when nothing is committed). If events of the
    partition were routed before the assignment was learnt, the later of the two wins:
    a position never claims less than what has really been routed.

    The caller must make sure no event of a revoked partition is routed after
    ``revoked`` (the Faust app waits for its streams to drain before revoking).
    """

    def __init__(self) -> None:
        self._owned: set[int] = set()
        self._last: dict[int, int] = {}

    def assigned(self, starts: Mapping[int, int]) -> None:
        for partition, start in starts.items():
            self._owned.add(partition)
            self._last[partition] = max(self._last.get(partition, start - 1), start - 1)

    def revoked(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._owned.discard(partition)
            self._last.pop(partition, None)

    def routed(self, partition: int, offset: int) -> None:
        self._last[partition] = offset

    def snapshot(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Positions of the owned partitions (or of those named, if owned)."""
        wanted = self._owned if partitions is None else self._owned.intersection(partitions)
        return {partition: self._last[partition] for partition in sorted(wanted)}

    def last(self, partition: int) -> int | None:
        return self._last.get(partition)

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(self._owned)
