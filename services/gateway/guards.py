"""Checks shared by every gateway through Redis: reused event ids and connection churn.

Both fail open. Redis holds rebuildable state only, and an exam must not stop because it
blinked: without the id check a reused id is still dropped by the views (the bug this
check exists to report), and without the connect limit churn costs log records, not
correctness. After a failure both checks are skipped for ``guard_retry_s`` so a dead Redis
does not add its timeout to every frame.
"""

from __future__ import annotations

import asyncio
import time
from enum import Enum

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.settings import RedisSettings
from adapters.tokens import Identity, StudentIdentity
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
        self._claim_id = client.register_script(_CLAIM_ID)
        self._count_connect = client.register_script(_COUNT_CONNECT)
        self._skip_until = 0.0

    async def claim_id(self, scope: str, frame_id: str, fingerprint: str) -> IdClaim:
        """Remember ``frame_id`` with its content in ``scope``, or compare with what was."""
        if self._skipping("id"):
            return IdClaim.UNCHECKED
        # A hash tag keeps both keys of a scope in one Redis Cluster slot for the script.
        base = f"{self._prefix}ids:{{{scope}}}"
        try:
            async with asyncio.timeout(self._timeout_s):
                code = await self._claim_id(
                    keys=[f"{base}:fp", f"{base}:order"],
                    args=[
                        frame_id,
                        fingerprint,
                        self._options.id_memory,
                        self._options.id_memory_ttl_s,
                    ],
                )
        except (TimeoutError, OSError, RedisError) as exc:
            self._failed("id", exc)
            return IdClaim.UNCHECKED
        return _CLAIMS[int(code)]

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

    def _failed(self, check: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self._options.guard_retry_s
        self._metrics.guard_unchecked.labels(check).inc()
        log.warning("guard_check_failed_open", check=check, error=repr(exc))
