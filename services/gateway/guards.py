"""Checks shared by every gateway through Redis: reused event ids and connection churn.

Both fail open. Redis holds rebuildable state only, and an exam must not stop because it
blinked: without the id check a reused id is still dropped by the views (the bug this
check exists to report), and without the connect limit churn costs log records, not
correctness. After a failure both checks are skipped for ``guard_retry_s`` so a dead Redis
does not add its timeout to every frame.

Id checks are batched: every frame needs one, and one Redis call per frame each took a
pooled connection. Under load the pool ran dry (``MaxConnectionsError``), which switched the
check off for ``guard_retry_s`` at a time, exactly when it mattered. Now the checks asked
for while a batch is out wait for the next one, and each batch is one script call on a
single connection: one round trip, in arrival order, so two copies of one id in a batch
still meet as first and resend. A batch spans attempts, so its keys span hash slots: the
check needs one Redis (or a primary with replicas), not a Redis Cluster, as the snapshots
do (docs/capacity.md).

A batch waits up to ``claim_window_ms`` for company while this gateway checks more than
``claim_window_above_per_s`` ids a second (below that a window would seldom find company and
only add its wait). With one batch per round trip, a
gateway that keeps up sent a pipeline of one or two claims per frame, and the frames each
cleared reached the producer alone, each its own produce request: at 2,000 updates/s a
third of a gateway's CPU was socket writes to Redis and Kafka (docs/benchmarks.md). The
frames a batch clears wake in one loop turn, so they share a produce request too.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from enum import Enum

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from adapters.settings import RedisSettings
from adapters.tokens import Identity, StudentIdentity
from domain.pace import BusyMeter
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewayOptions

log = structlog.get_logger(__name__)

# One call per batch. KEYS: for each claim its fingerprints hash and its order list.
# ARGV: memory, ttl seconds, then each claim's id and fingerprint. Claims are taken in
# order, so two copies of one id in a batch meet as first and resend. Per claim:
# 0 = new (remembered now), 1 = the same content again (a resend), 2 = other content.
_CLAIM_IDS = """
local memory = tonumber(ARGV[1])
local ttl = ARGV[2]
local answers = {}
for i = 1, #KEYS / 2 do
  local fingerprints, order = KEYS[2 * i - 1], KEYS[2 * i]
  local id, fingerprint = ARGV[2 * i + 1], ARGV[2 * i + 2]
  local old = redis.call('HGET', fingerprints, id)
  if old then
    answers[i] = old == fingerprint and 1 or 2
  else
    redis.call('HSET', fingerprints, id, fingerprint)
    if redis.call('RPUSH', order, id) > memory then
      redis.call('HDEL', fingerprints, redis.call('LPOP', order))
    end
    redis.call('EXPIRE', fingerprints, ttl)
    redis.call('EXPIRE', order, ttl)
    answers[i] = 0
  end
end
return answers
"""

# A script runs alone on Redis: a backlog of checks (a burst after a pause) goes out in
# calls of at most this many, each a millisecond or two of Redis, not one long stall of
# every other client (the status service's snapshots, the other gateways' checks).
_MAX_BATCH = 500

# KEYS: the counter. ARGV: window ms. A fixed window from the first connect: refused
# connects count too, but never extend the window, so a client that keeps hammering is
# let in again when the window ends.
_COUNT_CONNECT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


class IdClaim(Enum):
    NEW = "new"
    RESEND = "resend"
    REUSED = "reused"
    UNCHECKED = "unchecked"


_CLAIMS = {0: IdClaim.NEW, 1: IdClaim.RESEND, 2: IdClaim.REUSED}


@dataclass(slots=True)
class _Claim:
    scope: str
    frame_id: str
    fingerprint: str
    answer: asyncio.Future[IdClaim]


class Guards:
    def __init__(
        self,
        client: Redis,
        redis: RedisSettings,
        options: GatewayOptions,
        metrics: GatewayMetrics,
    ) -> None:
        self._prefix = redis.key_prefix
        self._timeout_s = redis.timeout_s
        self._options = options
        self._metrics = metrics
        self._client = client
        self._claim_sha = client.register_script(_CLAIM_IDS).sha
        self._count_connect = client.register_script(_COUNT_CONNECT)
        self._skip_until = 0.0
        self._window_s = options.claim_window_ms / 1000
        self._window_above = options.claim_window_above_per_s
        self._busy = BusyMeter(busy_per_s=self._window_above)
        self._oldest_at = 0.0
        self._claims: list[_Claim] = []
        self._claimer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()  # a getpid() per lookup on Python 3.11

    async def claim_id(self, scope: str, frame_id: str, fingerprint: str) -> IdClaim:
        """Remember ``frame_id`` with its content in ``scope``, or compare with what was."""
        if self._skipping("id"):
            return IdClaim.UNCHECKED
        loop = self._loop
        now = loop.time()
        answer: asyncio.Future[IdClaim] = loop.create_future()
        busy = self._busy.observe(1, now) if self._window_above else True
        if not self._claims:
            self._oldest_at = now if busy else -math.inf
        self._claims.append(_Claim(scope, frame_id, fingerprint, answer))
        if self._claimer is None:
            self._claimer = asyncio.create_task(self._send_claims())
        # No timeout of its own: every batch is bounded, and a batch that fails or times
        # out answers each of its claims (UNCHECKED), as does a claimer that stops.
        return await answer

    async def close(self) -> None:
        claimer, self._claimer = self._claimer, None
        if claimer is not None:
            claimer.cancel()
            await asyncio.gather(claimer, return_exceptions=True)

    async def _send_claims(self) -> None:
        batch: list[_Claim] = []
        try:
            loop = asyncio.get_running_loop()
            while self._claims:
                # The oldest waiting claim waits at most the window before its batch goes.
                if (delay := self._oldest_at + self._window_s - loop.time()) > 0:
                    await asyncio.sleep(delay)
                batch, self._claims = self._claims[:_MAX_BATCH], self._claims[_MAX_BATCH:]
                try:
                    async with asyncio.timeout(self._timeout_s):
                        answers = await self._claim_batch(batch)
                except (TimeoutError, OSError, RedisError) as exc:
                    self._failed("id", exc, frames=len(batch))
                    answers = [IdClaim.UNCHECKED] * len(batch)
                for claim, answer in zip(batch, answers, strict=True):
                    if not claim.answer.done():
                        claim.answer.set_result(answer)
                batch = []
        finally:
            # Shutting down: whoever still waits goes on unchecked (fail open), not cancelled,
            # which its own task would take for its own cancellation.
            self._claimer = None
            for claim in (*batch, *self._claims):
                if not claim.answer.done():
                    claim.answer.set_result(IdClaim.UNCHECKED)
            self._claims = []

    async def _claim_batch(self, batch: list[_Claim]) -> list[IdClaim]:
        try:
            results = await self._run_script(batch)
        except NoScriptError:
            # Redis restarted or was flushed: load the script once, then the batch again.
            await self._client.script_load(_CLAIM_IDS)
            results = await self._run_script(batch)
        answers = []
        for result in results:
            answer = _CLAIMS.get(result) if isinstance(result, int) else None
            if answer is None:
                self._metrics.guard_unchecked.labels("id").inc()
                log.warning("id_check_failed_open", answer=repr(result))
                answer = IdClaim.UNCHECKED
            answers.append(answer)
        return answers

    async def _run_script(self, batch: list[_Claim]) -> list[object]:
        """The whole batch in one script call: one command to build, run and parse, where a
        pipeline of one call per claim cost a gateway a tenth of its CPU (docs/benchmarks.md)."""
        keys: list[str] = []
        args: list[str | int] = [self._options.id_memory, self._options.id_memory_ttl_s]
        for claim in batch:
            base = f"{self._prefix}ids:{{{claim.scope}}}"
            keys += (f"{base}:fp", f"{base}:order")
            args += (claim.frame_id, claim.fingerprint)
        results = await self._client.evalsha(self._claim_sha, len(keys), *keys, *args)
        if not isinstance(results, list) or len(results) != len(batch):
            raise RedisError(f"the id script answered {results!r:.200} for {len(batch)} claims")
        return results

    async def connect_retry_after_ms(self, identity: Identity) -> int | None:
        """Count a connect of this attempt (proctor); milliseconds to wait if over the limit."""
        if self._skipping("connect"):
            return None
        who = (
            f"att:{identity.attempt}"
            if isinstance(identity, StudentIdentity)
            else f"proc:{identity.sub}"
        )
        window_ms = int(self._options.connect_window_s * 1000)
        try:
            async with asyncio.timeout(self._timeout_s):
                count, ttl_ms = await self._count_connect(
                    keys=[f"{self._prefix}connects:{{{who}}}"], args=[window_ms]
                )
        except (TimeoutError, OSError, RedisError) as exc:
            self._failed("connect", exc)
            return None
        if int(count) <= self._options.connect_limit:
            return None
        return max(1, int(ttl_ms))

    def _skipping(self, check: str) -> bool:
        if time.monotonic() < self._skip_until:
            self._metrics.guard_unchecked.labels(check).inc()
            return True
        return False

    def _failed(self, check: str, exc: BaseException, *, frames: int = 1) -> None:
        self._skip_until = time.monotonic() + self._options.guard_retry_s
        self._metrics.guard_unchecked.labels(check).inc(frames)
        log.warning("guard_check_failed_open", check=check, error=repr(exc))
