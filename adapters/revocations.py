"""Revoked tokens, kept in Redis until they would have expired anyway.

An LMS (or an administrator) revokes a token by its ``jti``; gateways refuse it on connect
with ``token_revoked``. Hot, rebuildable state: losing it re-admits revoked tokens only until
their own expiry, which is why tokens should be short-lived.

    python -m adapters.revocations <jti> --until <epoch seconds>
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio as aioredis

from adapters.redis_client import redis_client
from adapters.settings import CommonSettings, RedisSettings


class RedisRevocations:
    def __init__(self, client: aioredis.Redis, settings: RedisSettings) -> None:
        self._redis = client
        self._timeout = settings.timeout_s
        self._prefix = f"{settings.key_prefix}revoked:"

    async def revoke(self, jti: str, *, until_epoch_s: int) -> None:
        async with asyncio.timeout(self._timeout):
            await self._redis.set(f"{self._prefix}{jti}", b"1", exat=max(until_epoch_s, 1))

    async def is_revoked(self, jti: str) -> bool:
        async with asyncio.timeout(self._timeout):
            return bool(await self._redis.exists(f"{self._prefix}{jti}"))


async def _revoke(jti: str, until_epoch_s: int) -> None:
    settings = CommonSettings()
    client = redis_client(settings.redis)
    try:
        await RedisRevocations(client, settings.redis).revoke(jti, until_epoch_s=until_epoch_s)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="revoke a token by its jti")
    parser.add_argument("jti")
    parser.add_argument(
        "--until",
        type=int,
        default=int(time.time()) + 24 * 3600,
        help="epoch seconds: the token's exp (default: one day from now)",
    )
    args = parser.parse_args()
    asyncio.run(_revoke(args.jti, args.until))


if __name__ == "__main__":
    main()
