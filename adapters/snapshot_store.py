"""The live exam snapshot in Redis: per-attempt state plus per-partition watermarks.

Layout (all keys under ``RedisSettings.key_prefix``):
- ``exam:<exam>:attempts`` hash: attempt id -> ``AttemptState`` JSON
- ``exam:<exam>:seqs`` hash: attempt id -> that state's seq (compared without decoding JSON)
- ``watermarks:<log topic>`` hash: partition -> offset of the last event applied

The status service writes a batch in one Lua script, so a reader that fetches states and
watermarks in one MULTI sees a snapshot that is exactly "the log up to the watermarks".
Writes never go backwards: a state replaces one with a lower seq only, a watermark only
rises, so a status instance that lost its partitions in a rebalance cannot roll the snapshot
back with a late write. Rebuildable from the log (into a fresh prefix, or after deleting it).
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


# KEYS[1]: watermarks; then per exam its attempts hash and its seqs hash.
# ARGV[1]: number of states; per state: exam index (1-based), attempt, seq, JSON;
# then (partition, offset) pairs.
_WRITE_FORWARD = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local exam, attempt, seq = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local states, seqs = KEYS[2 * exam], KEYS[2 * exam + 1]
  local current = tonumber(redis.call('HGET', seqs, attempt) or '-1')
  if seq > current then
    redis.call('HSET', states, attempt, ARGV[i + 3])
    redis.call('HSET', seqs, attempt, seq)
  end
  i = i + 4
end
while i < #ARGV do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
return 0
"""


class RedisSnapshotStore:
    def __init__(self, client: aioredis.Redis, settings: RedisSettings, *, topic: str) -> None:
        self._redis = client
        self._timeout = settings.timeout_s
        self._prefix = settings.key_prefix
        self._watermarks_key = f"{self._prefix}watermarks:{topic}"
        self._write_forward = client.register_script(_WRITE_FORWARD)

    def _exam_key(self, exam: str) -> str:
        return f"{self._prefix}exam:{exam}:attempts"

    def _seqs_key(self, exam: str) -> str:
        return f"{self._prefix}exam:{exam}:seqs"

    async def write(self, states: Sequence[AttemptState], watermarks: Mapping[int, int]) -> None:
        if not states and not watermarks:
            return
        keys: list[str] = [self._watermarks_key]
        exam_index: dict[str, int] = {}
        args: list[str | bytes | int] = [len(states)]
        for state in states:
            exam = state.view.exam
            if exam not in exam_index:
                exam_index[exam] = len(exam_index) + 1
                keys += [self._exam_key(exam), self._seqs_key(exam)]
            args += [
                exam_index[exam],
                state.view.attempt,
                state.view.seq,
                state.model_dump_json().encode(),
            ]
        for partition, offset in watermarks.items():
            args += [partition, offset]
        async with asyncio.timeout(self._timeout):
            await self._write_forward(keys=keys, args=args)

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
            attempts = self.exams.setdefault(state.view.exam, {})
            current = attempts.get(state.view.attempt)
            if current is None or state.view.seq > current.view.seq:
                attempts[state.view.attempt] = state
        for partition, offset in watermarks.items():
            self.marks[partition] = max(offset, self.marks.get(partition, -1))

    async def read_exam(self, exam: str) -> tuple[list[AttemptState], dict[int, int]]:
        return list(self.exams.get(exam, {}).values()), dict(self.marks)

    async def read_attempt(self, exam: str, attempt: str) -> AttemptState | None:
        return self.exams.get(exam, {}).get(attempt)

    async def watermarks(self) -> dict[int, int]:
        return dict(self.marks)
