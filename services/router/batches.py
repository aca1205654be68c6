"""Rendering routing decisions as ``DeliveryBatch`` records, fast.

Items are serialised with orjson, once per event and kind however many slots get them;
the log value is embedded verbatim as an ``orjson.Fragment`` (already valid JSON: routing
parsed it), never decoded and re-encoded through pydantic. The result is exactly what
``schemas.deliveries.DeliveryBatch`` decodes, which the unit tests check.

A slot's items of one batch normally make one record; past ``max_record_bytes`` they are
split into several, in order, so no record exceeds what the broker accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from domain.routing import EventHead, Targets
from schemas.deliveries import WatchReady


@dataclass(slots=True)
class _SlotItems:
    chunks: list[list[bytes]] = field(default_factory=lambda: [[]])
    size: int = 0


class BatchBuilder:
    """Collects the items of one batch per slot and renders the slot's records."""

    def __init__(self, max_record_bytes: int) -> None:
        self._max = max_record_bytes
        self._slots: dict[int, _SlotItems] = {}
        self.item_counts = {"for_proctors": 0, "for_students": 0, "watch_ready": 0}

    def add_event(
        self, targets: Targets, head: EventHead, partition: int, offset: int, raw: bytes
    ) -> None:
        event = orjson.Fragment(raw)
        if targets.proctors:
            item = orjson.dumps(
                {
                    "kind": "for_proctors",
                    "exam": head.exam,
                    "partition": partition,
                    "offset": offset,
                    "event": event,
                }
            )
            for slot in targets.proctors:
                self._add(slot, item)
            self.item_counts["for_proctors"] += len(targets.proctors)
        if targets.students:
            item = orjson.dumps(
                {
                    "kind": "for_students",
                    "exam": head.exam,
                    "attempt": head.attempt,
                    "partition": partition,
                    "offset": offset,
                    "event": event,
                }
            )
            for slot in targets.students:
                self._add(slot, item)
            self.item_counts["for_students"] += len(targets.students)

    def add_watch_ready(self, slot: int, ready: WatchReady) -> None:
        self._add(slot, ready.model_dump_json().encode())
        self.item_counts["watch_ready"] += 1

    def _add(self, slot: int, item: bytes) -> None:
        entry = self._slots.get(slot)
        if entry is None:
            entry = self._slots[slot] = _SlotItems()
        elif entry.size + len(item) > self._max and entry.chunks[-1]:
            entry.chunks.append([])
            entry.size = 0
        entry.chunks[-1].append(item)
        entry.size += len(item) + 1

    def __bool__(self) -> bool:
        return bool(self._slots)

    def records(self) -> Iterator[tuple[int, bytes]]:
        """(slot, DeliveryBatch JSON) in slot order; a slot's records in item order."""
        for slot in sorted(self._slots):
            for chunk in self._slots[slot].chunks:
                yield slot, render(slot, chunk)


def render(slot: int, items: list[bytes]) -> bytes:
    return orjson.dumps({"slot": slot, "items": [orjson.Fragment(item) for item in items]})
