"""Names and Role Provisioning Services 2.0: who is enrolled in a course, asked of the
platform with an access token the tool obtains by signing a client assertion (RFC 7523)
with its own key; each network wait bounded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from domain.lti import NRPS_SCOPE, Registration
from services.lti.errors import PlatformUnavailable
from services.lti.keys import ToolKeys

MEMBERSHIP_TYPE = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MAX_PAGES = 200  # 200 pages of a platform's page size: far beyond any course, never a loop


@dataclass(frozen=True)
class Member:
    user_id: str
    name: str
    roles: tuple[str, ...]
    active: bool


class NrpsClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        keys: ToolKeys,
        *,
        timeout_s: float,
        cache_s: float = 60.0,
    ) -> None:
        self._session = session
        self._keys = keys
        self._timeout = timeout_s
        self._cache_s = cache_s
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        # Every proctor's dashboard asks each minute; the platform is asked once per cache_s.
        self._rosters: dict[str, tuple[list[Member], float]] = {}

    async def _access_token(self, registration: Registration) -> str:
        key = (registration.issuer, registration.client_id)
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": _ASSERTION_TYPE,
            "client_assertion": self._keys.client_assertion(
                registration.client_id, registration.auth_token_url
            ),
            "scope": NRPS_SCOPE,
        }
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session.post(registration.auth_token_url, data=form) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PlatformUnavailable(f"token endpoint: {exc!r}") from exc
        token = body.get("access_token") if isinstance(body, dict) else None
        if status != 200 or not isinstance(token, str):
            raise PlatformUnavailable(f"token endpoint refused the tool: HTTP {status}")
        expires_in = body.get("expires_in", 3600)
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        # Renew a little early: a token that expires between our check and the platform's
        # would fail a roster read for nothing.
        self._tokens[key] = (token, time.monotonic() + max(lifetime - 30.0, 0.0))
        return token

    async def members(self, registration: Registration, memberships_url: str) -> list[Member]:
        cached = self._rosters.get(memberships_url)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        members = await self._fetch_members(registration, memberships_url)
        self._rosters[memberships_url] = (members, time.monotonic() + self._cache_s)
        return members

    async def _fetch_members(
        self, registration: Registration, memberships_url: str
    ) -> list[Member]:
        token = await self._access_token(registration)
        headers = {"Authorization": f"Bearer {token}", "Accept": MEMBERSHIP_TYPE}
        url: str | None = memberships_url
        members: list[Member] = []
        for _ in range(_MAX_PAGES):
            if url is None:
                return members
            try:
                async with asyncio.timeout(self._timeout):
                    async with self._session.get(url, headers=headers) as resp:
                        if resp.status != 200:
                            raise PlatformUnavailable(f"memberships: HTTP {resp.status}")
                        page = await resp.json(content_type=None)
                        link = resp.links.get("next")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise PlatformUnavailable(f"memberships: {exc!r}") from exc
            members.extend(_members(page))
            url = str(link["url"]) if link is not None else None
        return members


def _members(page: object) -> list[Member]:
    entries = page.get("members") if isinstance(page, dict) else None
    if not isinstance(entries, list):
        raise PlatformUnavailable("memberships: no members list in the answer")
    members = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("user_id"), str):
            continue
        roles = entry.get("roles")
        name = entry.get("name") or " ".join(
            str(entry[p]) for p in ("given_name", "family_name") if entry.get(p)
        )
        members.append(
            Member(
                user_id=entry["user_id"],
                name=str(name)[:200],
                roles=tuple(r for r in roles if isinstance(r, str))
                if isinstance(roles, list)
                else (),
                active=entry.get("status", "Active") == "Active",
            )
        )
    return members
