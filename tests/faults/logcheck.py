"""The log's truth: the events topic read directly (aiokafka, no consumer group), folded with
the one reducer every view uses, and the views compared against it."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from domain.attempt_state import apply
from schemas.events import StudentBackOnline, StudentOffline, decode_event
from schemas.views import AttemptState, StudentView


@dataclass
class Verdict:
    attempt: str
    reason: str
    since: int
    ts: int


@dataclass
class LogTruth:
    """Everything read so far from the log, kept current by ``LogReader.catch_up``."""

    states: dict[str, AttemptState] = field(default_factory=dict)  # attempt -> folded state
    ids: Counter[str] = field(default_factory=Counter)
    sources: dict[str, str] = field(default_factory=dict)  # id -> source kind
    offline: list[Verdict] = field(default_factory=list)
    # A second offline verdict (another id) for a student already offline: two notifiers
    # judged one attempt, or one judged it twice.
    offline_repeats: int = 0
    _liveness: dict[str, bool] = field(default_factory=dict)  # attempt -> last verdict online
    records: int = 0
    undecodable: int = 0

    def views(self, exam: str | None = None) -> dict[str, StudentView]:
        return {
            attempt: state.view
            for attempt, state in self.states.items()
            if exam is None or state.view.exam == exam
        }

    def duplicates(self) -> dict[str, int]:
        return {event_id: n for event_id, n in self.ids.items() if n > 1}


class LogReader:
    """Reads one topic's every partition from the beginning, then incrementally."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._topic = topic
        self._count = partitions
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            request_timeout_ms=15_000,
        )
        self._partitions: list[TopicPartition] = []
        self.truth = LogTruth()

    async def start(self) -> None:
        await self._consumer.start()
        self._partitions = [TopicPartition(self._topic, p) for p in range(self._count)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)

    async def close(self) -> None:
        await self._consumer.stop()

    async def catch_up(self, timeout_s: float = 60.0) -> int:
        """Read up to the end offsets as they are now; returns how many records were new."""
        async with asyncio.timeout(timeout_s):
            ends: dict[TopicPartition, int] = await self._consumer.end_offsets(self._partitions)
            new = 0
            while True:
                behind = [tp for tp in self._partitions if await self._position(tp) < ends[tp]]
                if not behind:
                    return new
                batches = await self._consumer.getmany(*behind, timeout_ms=500, max_records=5000)
                for records in batches.values():
                    for record in records:
                        self._fold(record.offset, record.value)
                        new += 1

    async def _position(self, tp: TopicPartition) -> int:
        position: int = await self._consumer.position(tp)
        return position

    def _fold(self, offset: int, raw: bytes | None) -> None:
        truth = self.truth
        truth.records += 1
        if raw is None:
            truth.undecodable += 1
            return
        try:
            event = decode_event(raw)
        except ValueError:
            truth.undecodable += 1
            return
        truth.ids[event.id] += 1
        first_time = truth.ids[event.id] == 1
        truth.sources.setdefault(event.id, event.source.kind)
        if isinstance(event, StudentOffline) and event.attempt is not None:
            truth.offline.append(Verdict(event.attempt, event.reason, event.since, event.ts))
            if first_time and truth._liveness.get(event.attempt) is False:
                truth.offline_repeats += 1
            truth._liveness[event.attempt] = False
        elif isinstance(event, StudentBackOnline) and event.attempt is not None:
            truth._liveness[event.attempt] = True
        if event.attempt is None:
            return
        folded = apply(truth.states.get(event.attempt), event, offset)
        if folded is not None:
            truth.states[event.attempt] = folded


def row_view(row: Mapping[str, Any]) -> StudentView:
    return StudentView.model_validate(row)


def differences(
    truth: Mapping[str, StudentView], seen: Mapping[str, StudentView]
) -> dict[str, str]:
    """attempt -> what is wrong with the view's row: missing, extra, or which fields differ."""
    wrong: dict[str, str] = {}
    for attempt, expected in truth.items():
        got = seen.get(attempt)
        if got is None:
            wrong[attempt] = "missing"
        elif got != expected:
            fields = [
                name
                for name in StudentView.model_fields
                if getattr(got, name) != getattr(expected, name)
            ]
            wrong[attempt] = "differs: " + ",".join(fields[:4])
    for attempt in seen.keys() - truth.keys():
        wrong[attempt] = "extra"
    return wrong


def summarise(wrong: Mapping[str, str]) -> str:
    kinds: Counter[str] = Counter(what.split(":")[0] for what in wrong.values())
    fields: Counter[str] = Counter()
    for what in wrong.values():
        if what.startswith("differs: "):
            fields.update(what.removeprefix("differs: ").split(","))
    text = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    if fields:
        text += " (" + ",".join(f for f, _ in fields.most_common(3)) + ")"
    return text


def by_exam(views: Iterable[StudentView]) -> dict[str, dict[str, StudentView]]:
    grouped: dict[str, dict[str, StudentView]] = defaultdict(dict)
    for view in views:
        grouped[view.exam][view.attempt] = view
    return grouped
