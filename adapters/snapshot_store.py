"""The live exam snapshot in Redis: per-attempt state plus per-partition watermarks.

Layout (all keys under ``RedisSettings.key_prefix``):
- ``exam:<exam>:attempts`` hash: attempt id -> ``AttemptState`` JSON
- ``exam:<exam>:seqs`` hash: attempt id -> that state's seq (compared without decoding JSON)
- ``watermarks:<log topic>`` hash: partition -> offset of the last event applied
- ``meta:snapshot:<log topic>`` hash: the snapshot's marker: ``generation`` (an id the status
  service writes under), ``partitions``, ``since_ms`` (when the generation began) and one
  ``rebuilding:<partition>`` field per log partition not yet re-folded from the log

The status service writes a batch in one Lua script, so a reader that fetches states and
watermarks in one MULTI sees a snapshot that is exactly "the log up to the watermarks".
Writes never go backwards: a state replaces one with a lower seq only, a watermark only
rises, so a status instance that lost its partitions cannot roll the snapshot back with a
late write. Rebuildable from the log (into a fresh prefix, or after deleting it).

Losing Redis's data (``FLUSHALL``, eviction, a restore from an old dump) must not look like a
complete snapshot. The status service's writes name the generation of the marker; the script
refuses a write whose generation is not the marker's (``write`` returns False), so the first
write after a loss tells the service, which then ``claim``s a new generation (every partition
marked rebuilding, watermarks dropped), re-folds its partitions from the log's beginning and
clears each partition's mark in the write that brings it back to where it was. Readers that
serve a snapshot as complete (``read_exam``, and ``read_attempt`` when the attempt is absent)
raise ``SnapshotIncomplete`` while any partition is rebuilding, or when there is no marker
but there are watermarks (the marker alone was lost); ``partial=True`` reads what is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from adapters.settings import RedisSettings
from schemas.views import AttemptState

_REBUILDING = "rebuilding:"


class SnapshotIncomplete(RedisError):
    """The snapshot is being rebuilt from the log (or its marker is gone): what Redis holds
    may lack attempts, so it must not be served as complete. A ``RedisError`` on purpose:
    every caller that treats Redis as unavailable (answer ``unavailable``, retry later) then
    does the right thing without knowing about rebuilds."""

    def __init__(self, rebuilding: Iterable[int] | None) -> None:
        self.rebuilding = None if rebuilding is None else sorted(rebuilding)
        what = (
            "has no marker (its data was lost)"
            if self.rebuilding is None
            else f"is being rebuilt from the log (partitions {self.rebuilding})"
        )
        super().__init__(f"the snapshot {what}")


@dataclass(frozen=True, slots=True)
class SnapshotMarker:
    generation: str
    partitions: int
    since_ms: int
    rebuilding: frozenset[int]

    @property
    def complete(self) -> bool:
        return not self.rebuilding


class SnapshotStore(Protocol):
    async def write(
        self,
        states: Sequence[AttemptState],
        watermarks: Mapping[int, int],
        *,
        generation: str | None = None,
        rebuilt: Iterable[int] = (),
    ) -> bool:
        """Forward-only write; with ``generation``, only if the marker still has it (False:
        the snapshot was lost or re-begun, nothing written). ``rebuilt`` clears those
        partitions' rebuilding marks in the same step."""
        ...

    async def claim(self, generation: str, partitions: int, now_ms: int) -> SnapshotMarker:
        """The marker; if there is none, begin ``generation`` first (all partitions rebuilding,
        watermarks dropped). Atomic: of two services claiming at once, one generation wins."""
        ...

    async def generation(self) -> str | None: ...

    async def marker(self) -> SnapshotMarker | None: ...

    async def read_exam(
        self, exam: str, *, partial: bool = False
    ) -> tuple[list[AttemptState], dict[int, int]]: ...

    async def read_attempt(
        self, exam: str, attempt: str, *, partial: bool = False
    ) -> AttemptState | None: ...

    async def watermarks(self) -> dict[int, int]: ...


# KEYS[1]: watermarks; KEYS[2]: marker; then per exam its attempts hash and its seqs hash.
# ARGV[1]: generation ('' = unchecked); ARGV[2]: number of rebuilt partitions, then them;
# then the number of states; per state: exam index (1-based), attempt, seq, JSON;
# then (partition, offset) pairs. Returns 1 if written, 0 if the generation is not the marker's.
_WRITE_FORWARD = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[2], 'generation') ~= ARGV[1] then
  return 0
end
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  redis.call('HDEL', KEYS[2], 'rebuilding:' .. ARGV[i])
  i = i + 1
end
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  local exam, attempt, seq = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local states, seqs = KEYS[2 * exam + 1], KEYS[2 * exam + 2]
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
return 1
"""

# KEYS[1]: marker; KEYS[2]: watermarks. ARGV: generation, partitions, now_ms.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'partitions', ARGV[2], 'since_ms', ARGV[3])
  for p = 0, tonumber(ARGV[2]) - 1 do
    redis.call('HSET', KEYS[1], 'rebuilding:' .. p, ARGV[3])
  end
  redis.call('DEL', KEYS[2])
end
return redis.call('HGETALL', KEYS[1])
"""


class RedisSnapshotStore:
    def __init__(self, client: aioredis.Redis, settings: RedisSettings, *, topic: str) -> None:
        self._redis = client
        self._timeout = settings.timeout_s
        self._prefix = settings.key_prefix
        self._watermarks_key = f"{self._prefix}watermarks:{topic}"
        self._marker_key = f"{self._prefix}meta:snapshot:{topic}"
        self._write_forward = client.register_script(_WRITE_FORWARD)
        self._claim = client.register_script(_CLAIM)

    def _exam_key(self, exam: str) -> str:
        return f"{self._prefix}exam:{exam}:attempts"

    def _seqs_key(self, exam: str) -> str:
        return f"{self._prefix}exam:{exam}:seqs"

    async def write(
        self,
        states: Sequence[AttemptState],
        watermarks: Mapping[int, int],
        *,
        generation: str | None = None,
        rebuilt: Iterable[int] = (),
    ) -> bool:
        done = list(rebuilt)
        if not states and not watermarks and not done and generation is None:
            return True
        keys: list[str] = [self._watermarks_key, self._marker_key]
        exam_index: dict[str, int] = {}
        args: list[str | bytes | int] = [generation or "", len(done), *done, len(states)]
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
            written = await self._write_forward(keys=keys, args=args)
        return bool(int(written))

    async def claim(self, generation: str, partitions: int, now_ms: int) -> SnapshotMarker:
        async with asyncio.timeout(self._timeout):
            raw = await self._claim(
                keys=[self._marker_key, self._watermarks_key],
                args=[generation, partitions, now_ms],
            )
        fields = dict(zip(raw[::2], raw[1::2], strict=True))
        marker = _marker(fields)
        assert marker is not None, "the claim script always leaves a marker"
        return marker

    async def generation(self) -> str | None:
        async with asyncio.timeout(self._timeout):
            raw = await self._redis.hget(self._marker_key, "generation")
        return None if raw is None else _text(raw)

    async def marker(self) -> SnapshotMarker | None:
        async with asyncio.timeout(self._timeout):
            return _marker(await self._redis.hgetall(self._marker_key))

    async def read_exam(
        self, exam: str, *, partial: bool = False
    ) -> tuple[list[AttemptState], dict[int, int]]:
        async with asyncio.timeout(self._timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._exam_key(exam))
                pipe.hgetall(self._watermarks_key)
                pipe.hgetall(self._marker_key)
                raw_states, raw_marks, raw_marker = await pipe.execute()
        marks = _marks(raw_marks)
        if not partial:
            _complete_or_raise(_marker(raw_marker), marks)
        states = [AttemptState.model_validate_json(raw) for raw in raw_states.values()]
        return states, marks

    async def read_attempt(
        self, exam: str, attempt: str, *, partial: bool = False
    ) -> AttemptState | None:
        async with asyncio.timeout(self._timeout):
            raw = await self._redis.hget(self._exam_key(exam), attempt)
            if raw is None and not partial:
                # Absent: is that the truth, or a snapshot still being rebuilt?
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.hgetall(self._marker_key)
                    pipe.exists(self._watermarks_key)
                    raw_marker, has_marks = await pipe.execute()
                _complete_or_raise(_marker(raw_marker), {0: 0} if has_marks else {})
        return None if raw is None else AttemptState.model_validate_json(raw)

    async def watermarks(self) -> dict[int, int]:
        async with asyncio.timeout(self._timeout):
            return _marks(await self._redis.hgetall(self._watermarks_key))


def _complete_or_raise(marker: SnapshotMarker | None, watermarks: Mapping[int, int]) -> None:
    if marker is None:
        if watermarks:
            raise SnapshotIncomplete(None)
        return  # nothing written yet at all: an empty snapshot is the truth
    if marker.rebuilding:
        raise SnapshotIncomplete(marker.rebuilding)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _marker(raw: Mapping[bytes | str, bytes | str]) -> SnapshotMarker | None:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "generation" not in fields:
        return None
    return SnapshotMarker(
        generation=fields["generation"],
        partitions=int(fields.get("partitions", "0")),
        since_ms=int(fields.get("since_ms", "0")),
        rebuilding=frozenset(
            int(name[len(_REBUILDING) :]) for name in fields if name.startswith(_REBUILDING)
        ),
    )


def _marks(raw: Mapping[bytes | str, bytes | str]) -> dict[int, int]:
    return {int(p): int(o) for p, o in raw.items()}


class InMemorySnapshotStore:
    """The port's fake, for unit tests of the services' pure parts."""

    def __init__(self) -> None:
        self.exams: dict[str, dict[str, AttemptState]] = {}
        self.marks: dict[int, int] = {}
        self.meta: SnapshotMarker | None = None

    def lose(self) -> None:
        """What ``FLUSHALL`` does to Redis."""
        self.exams.clear()
        self.marks.clear()
        self.meta = None

    async def write(
        self,
        states: Sequence[AttemptState],
        watermarks: Mapping[int, int],
        *,
        generation: str | None = None,
        rebuilt: Iterable[int] = (),
    ) -> bool:
        if generation is not None and (self.meta is None or self.meta.generation != generation):
            return False
        done = set(rebuilt)
        if done and self.meta is not None:
            self.meta = replace(self.meta, rebuilding=self.meta.rebuilding - done)
        for state in states:
            attempts = self.exams.setdefault(state.view.exam, {})
            current = attempts.get(state.view.attempt)
            if current is None or state.view.seq > current.view.seq:
                attempts[state.view.attempt] = state
        for partition, offset in watermarks.items():
            self.marks[partition] = max(offset, self.marks.get(partition, -1))
        return True

    async def claim(self, generation: str, partitions: int, now_ms: int) -> SnapshotMarker:
        if self.meta is None:
            self.meta = SnapshotMarker(generation, partitions, now_ms, frozenset(range(partitions)))
            self.marks.clear()
        return self.meta

    async def generation(self) -> str | None:
        return None if self.meta is None else self.meta.generation

    async def marker(self) -> SnapshotMarker | None:
        return self.meta

    async def read_exam(
        self, exam: str, *, partial: bool = False
    ) -> tuple[list[AttemptState], dict[int, int]]:
        if not partial:
            _complete_or_raise(self.meta, self.marks)
        return list(self.exams.get(exam, {}).values()), dict(self.marks)

    async def read_attempt(
        self, exam: str, attempt: str, *, partial: bool = False
    ) -> AttemptState | None:
        found = self.exams.get(exam, {}).get(attempt)
        if found is None and not partial:
            _complete_or_raise(self.meta, self.marks)
        return found

    async def watermarks(self) -> dict[int, int]:
        return dict(self.marks)
