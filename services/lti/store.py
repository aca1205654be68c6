"""What the LTI tool keeps between requests, in Redis (shared by every tool replica, each
entry with an expiry where it can go stale): logins waiting for their launch, nonces already
used, and which exams a course has, so an instructor's launch can name them all.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

import orjson
import redis.asyncio as aioredis

from domain.lti import Launch


@dataclass(frozen=True)
class PendingLogin:
    """An OIDC login this tool started: the launch must come back with its state, from the
    browser holding ``browser`` in its cookie, with an id_token carrying ``nonce``."""

    issuer: str
    client_id: str
    nonce: str
    browser: str


@dataclass(frozen=True)
class ExamLink:
    """Where an exam came from on its platform: enough to ask NRPS who should sit it."""

    exam: str
    title: str
    course: str
    course_title: str
    issuer: str
    client_id: str
    deployment_id: str
    link_id: str
    memberships_url: str | None


class LtiStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str, timeout_s: float) -> None:
        self._redis = client
        self._prefix = f"{prefix}lti:"
        self._timeout = timeout_s

    async def begin_login(self, state: str, login: PendingLogin, ttl_s: int) -> None:
        async with asyncio.timeout(self._timeout):
            await self._redis.set(
                f"{self._prefix}login:{state}", orjson.dumps(asdict(login)), ex=ttl_s
            )

    async def take_login(self, state: str) -> PendingLogin | None:
        """The login for ``state``, once: a second launch with the same state finds nothing."""
        async with asyncio.timeout(self._timeout):
            raw = await self._redis.getdel(f"{self._prefix}login:{state}")
        return None if raw is None else PendingLogin(**orjson.loads(raw))

    async def use_nonce(self, issuer: str, nonce: str, ttl_s: int) -> bool:
        """False if this issuer's nonce was used before (within ``ttl_s``, which must outlast
        the id_token's own lifetime for the check to hold)."""
        async with asyncio.timeout(self._timeout):
            return bool(
                await self._redis.set(
                    f"{self._prefix}nonce:{issuer}:{nonce}", b"1", nx=True, ex=ttl_s
                )
            )

    async def remember_exam(self, launch: Launch) -> list[str]:
        """Record the launch's exam under its course; the course's exams, this one first."""
        link = ExamLink(
            exam=launch.exam,
            title=launch.link_title,
            course=launch.course,
            course_title=launch.context_title,
            issuer=launch.issuer,
            client_id=launch.client_id,
            deployment_id=launch.deployment_id,
            link_id=launch.link_id,
            memberships_url=launch.memberships_url,
        )
        async with asyncio.timeout(self._timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self._prefix}exam:{launch.exam}", orjson.dumps(asdict(link)))
                pipe.sadd(f"{self._prefix}course:{launch.course}", launch.exam)
                pipe.smembers(f"{self._prefix}course:{launch.course}")
                *_, members = await pipe.execute()
        others = sorted(_text(m) for m in members if _text(m) != launch.exam)
        return [launch.exam, *others]

    async def course_exams(self, course: str) -> list[str]:
        async with asyncio.timeout(self._timeout):
            members = await self._redis.smembers(f"{self._prefix}course:{course}")
        return sorted(_text(m) for m in members)

    async def exam_link(self, exam: str) -> ExamLink | None:
        async with asyncio.timeout(self._timeout):
            raw = await self._redis.get(f"{self._prefix}exam:{exam}")
        return None if raw is None else ExamLink(**orjson.loads(raw))

    async def deadline(self, attempt: str, proposed_ms: int, ttl_s: int) -> int:
        """The attempt's deadline, fixed by its first launch: a relaunch does not reset it."""
        key = f"{self._prefix}deadline:{attempt}"
        async with asyncio.timeout(self._timeout):
            await self._redis.set(key, str(proposed_ms), nx=True, ex=ttl_s)
            raw = await self._redis.get(key)
        return proposed_ms if raw is None else int(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
