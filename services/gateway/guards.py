"""Checks shared by every gateway through Redis: reused event ids and connection churn.

Both fail open. Redis holds rebuildable state only, and an exam must not stop because it
blinked: without the id check a reused id is still dropped by the views (the bug this
check exists to report), and without the connect limit churn costs log records, not
correctness. After a failure both checks are skipped for ``guard_retry_s`` so a dead Redis
does not add its timeout to every frame.

Id checks are batched: every frame needs one, and one Redis call per frame each took a
pooled connection. Under load the pool ran dry (``MaxConnectionsError``), which switched the
check off for ``guard_retry_s`` at a time, exactly when it mattered. Now the checks asked
for while a batch is out wait for the next one, and each batch is a single pipeline on a
single connection: one round trip, in arrival order, so two copies of one id in a batch
still meet as first and resend.

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

# KEYS: fingerprints hash, order list. ARGV: id, fingerprint, memory, ttl seconds.
# 0 = new (remembered now), 1 = the same content again (a resend), 2 = other content.
_CLAIM_ID = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  if old == ARGV[2] then return 1 end
  return 2
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('RPUSH', KEYS[2], ARGV[1]) > tonumber(ARGV[3]) then
  redis.call('HDEL', KEYS[1], redis.call('LPOP', KEYS[2]))
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 0
"""

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
        self._claim_sha = client.register_script(_CLAIM_ID).sha
        self._count_connect = client.register_script(_COUNT_CONNECT)
        self._skip_until = 0.0
        self._window_s = options.claim_window_ms / 1000
        self._window_above = options.claim_window_above_per_s
        self._busy = BusyMeter(busy_per_s=self._window_above)
        self._oldest_at = 0.0
        self._claims: list[_Claim] = []
        self._claimer: asyncio.Task[None] | None = None

    async def claim_id(self, scope: str, frame_id: str, fingerprint: str) -> IdClaim:
        """Remember ``frame_id`` with its content in ``scope``, or compare with what was."""
        if self._skipping("id"):
            return IdClaim.UNCHECKED
        loop = asyncio.get_running_loop()
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
                batch, self._claims = self._claims, []
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
        results = await self._pipeline(batch)
        if any(isinstance(result, NoScriptError) for result in results):
            # Redis restarted or was flushed: load the script once, then the batch again.
            await self._client.script_load(_CLAIM_ID)
            results = await self._pipeline(batch)
        answers = []
        for result in results:
            answer = _CLAIMS.get(result) if isinstance(result, int) else None
            if answer is None:
                self._metrics.guard_unchecked.labels("id").inc()
                log.warning("id_check_failed_open", answer=repr(result))
                answer = IdClaim.UNCHECKED
            answers.append(answer)
        return answers

    async def _pipeline(self, batch: list[_Claim]) -> list[object]:
        pipe = self._client.pipeline(transaction=False)
        memory, ttl = self._options.id_memory, self._options.id_memory_ttl_s
        for claim in batch:
            # A hash tag keeps both keys of a scope in one Redis Cluster slot for the script.
            base = f"{self._prefix}ids:{{{claim.scope}}}"
            pipe.evalsha(
                self._claim_sha,
                2,
                f"{base}:fp",
                f"{base}:order",
                claim.frame_id,
                claim.fingerprint,
                memory,
                ttl,
            )
        results: list[object] = await pipe.execute(raise_on_error=False)
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
