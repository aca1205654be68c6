"""The live exam snapshot in Redis: per-attempt state plus per-partition watermarks.

Layout (all keys under ``RedisSettings.key_prefix``):
- ``exam:<exam>:attempts`` hash: attempt id -> ``AttemptState`` JSON
- ``watermarks:<log topic>`` hash: partition -> offset of the last event applied

The status service writes both in one MULTI, so a reader that fetches both in one MULTI
sees a snapshot that is exactly "the log up to the watermarks". Rebuildable from the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

import redis.asyncio as aioredis

from adapters.settings import RedisSettings
from schemas.views import AttemptState


class SnapshotStore(Protocol):
    async def write(self, states: Sequence[AttemptState], watermarks: Mapping[int, int]) -> None: ...

    async def read_exam(self, exam: str) -> tuple[list[AttemptState], dict[int, int]]: ...

    async def read_attempt(self, exam: str, attempt: str) -> AttemptState | None: ...

    async def watermarks(self) -> dict[int, int]: ...


class RedisSnapshotStore:
    def __init__(self, client: aioredis.Redis, settings: RedisSettings, *, topic: str) -> None:
        self._redis = client
        self._timeout = settings.timeout_s
        self._prefix = settings.key_prefix
        self._watermarks_key = f"{self._prefix}watermarks:{topic}"

    def _exam_key(self, exam: str) -> str:
        return f"{self._prefix}exam:{exam}:attempts"

    async def write(self, states: Sequence[AttemptState], watermarks: Mapping[int, int]) -> None:
        by_exam: dict[str, dict[str, bytes]] = {}
        for state in states:
            by_exam.setdefault(state.view.exam, {})[state.view.attempt] = (
                state.model_dump_json().encode()
            )
        async with asyncio.timeout(self._timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                for exam, fields in by_exam.items():
                    pipe.hset(self._exam_key(exam), mapping=fields)  # type: ignore[arg-type]
                if watermarks:
                    pipe.hset(
                        self._watermarks_key,
                        mapping={str(p): str(o) for p, o in watermarks.items()},
                    )
                await pipe.execute()

    async def read_exam(self, exam: str) -> tuple[list[AttemptState], dict[int, int]]:
        async with asyncio.timeout(self._timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._exam_key(exam))
                pipe.hgetall(self._watermarks_key)
                raw_states, raw_marks = await pipe.execute()
        states = [AttemptState.model_validate_json(raw) for raw in raw_states.values()]
        return states, _marks(raw_marks)

    async def read_attempt(self, exam: str, attempt: str) -> AttemptState | None:
        async with asyncio.timeout(self._timeout):
            raw = await self._redis.hget(self._exam_key(exam), attempt)
        return None if raw is None else AttemptState.model_validate_json(raw)

    async def watermarks(self) -> dict[int, int]:
        async with asyncio.timeout(self._timeout):
            return _marks(await self._redis.hgetall(self._watermarks_key))


def _marks(raw: Mapping[bytes | str, bytes | str]) -> dict[int, int]:
    return {int(p): int(o) for p, o in raw.items()}


class InMemorySnapshotStore:
    """The port's fake, for unit tests of the services' pure parts."""

    def __init__(self) -> None:
        self.exams: dict[str, dict[str, AttemptState]] = {}
        self.marks: dict[int, int] = {}

    async def write(self, states: Sequence[AttemptState], watermarks: Mapping[int, int]) -> None:
        for state in states:
            self.exams.setdefault(state.view.exam, {})[state.view.attempt] = state
        self.marks.update(watermarks)

    async def read_exam(self, exam: str) -> tuple[list[AttemptState], dict[int, int]]:
        return list(self.exams.get(exam, {}).values()), dict(self.marks)

    async def read_attempt(self, exam: str, attempt: str) -> AttemptState | None:
        return self.exams.get(exam, {}).get(attempt)

    async def watermarks(self) -> dict[int, int]:
        return dict(self.marks)
