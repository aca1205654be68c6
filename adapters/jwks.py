"""The LMS's public signing keys, from its JWKS (JSON Web Key Set) URL, cached by ``kid``.

An LMS plugin that signs tokens with its own private key publishes the public half at a
URL. The gateway keeps the last good key set in memory, so checking a token whose ``kid`` is
cached never waits on the network:

- the set is refetched in the background ``max_age_s`` after the last good fetch, and
  ``min_refresh_s`` after a failed one;
- a ``kid`` that is not cached (the LMS rotated its key) triggers one refetch, at most one
  per ``min_refresh_s`` whatever the kids (a flood of forged kids cannot make the gateway
  hammer the LMS), and concurrent misses share that one fetch;
- a failed fetch keeps the last good set (logged, counted): an LMS outage does not refuse
  tokens signed with keys the gateway already has.

Only asymmetric signing keys with a ``kid`` are kept (:data:`ALGORITHMS`): a symmetric
(``oct``) key, an encryption key (``use: enc``), private key material or an RSA key under
2048 bits in the set is skipped, so no token can be checked against JWKS material as an HMAC
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from adapters.settings_fields import display

log = structlog.get_logger(__name__)

# Algorithms a JWKS key may verify; each key is bound to one (its ``alg``, or what its type
# implies: RSA -> RS256, EC P-256 -> ES256, OKP Ed25519 -> EdDSA).
ALGORITHMS = frozenset({"RS256", "ES256", "PS256", "EdDSA"})
# A key set is a few kilobytes; a larger answer is not one.
MAX_BYTES = 256 * 1024

# Called once per refresh with its outcome: "ok", "failed", or "throttled" (a kid miss that
# did not refetch because the last fetch was less than min_refresh_s ago).
RefreshObserver = Callable[[str], None]


class JwksUnavailable(Exception):
    """The key set could not be fetched or holds no usable key."""


class JwksKeys:
    """The key set at ``url``; ``async with`` it (or ``start``/``close``) to fetch and refresh."""

    def __init__(
        self,
        url: str,
        *,
        max_age_s: float = 300.0,
        min_refresh_s: float = 30.0,
        timeout_s: float = 5.0,
        on_refresh: RefreshObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._url_shown = display(url)  # for logs: a password in it masked
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._timeout_s = timeout_s
        self._observe: RefreshObserver = on_refresh or (lambda _: None)
        self._clock = clock
        self._keys: Mapping[str, PyJWK] = {}
        self._attempted_at: float | None = None  # the last fetch started, good or not
        self._last_ok = False  # how that fetch went
        self._inflight: asyncio.Task[bool] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def cached(self, kid: str) -> PyJWK | None:
        """The key named ``kid`` in the last good set; never waits."""
        return self._keys.get(kid)

    async def lookup(self, kid: str) -> PyJWK | None:
        """The key named ``kid``: cached, or after one refetch unless the last fetch was
        less than ``min_refresh_s`` ago (then None at once); None if the set lacks it."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._inflight is None and self._throttled():
            self._observe("throttled")
            return None
        await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> bool:
        """Fetch the set now, or join the fetch in flight; True if it brought a good set.

        A caller cancelled while waiting (a client that hung up) does not cancel the fetch
        others share.
        """
        if self._inflight is None:
            self._attempted_at = self._clock()
            self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        return await asyncio.shield(self._inflight)

    async def start(self) -> None:
        """Open the HTTP client and begin fetching in the background (without waiting)."""
        if self._session is not None:
            return
        parts = urlsplit(self.url)
        if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            log.warning("jwks_url_not_https", url=self._url_shown)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={"Accept": "application/json"},
        )
        self._refresher = asyncio.create_task(self._keep_fresh(), name="jwks-refresh")

    async def close(self) -> None:
        for task in (self._refresher, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._inflight = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> JwksKeys:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _throttled(self) -> bool:
        return (
            self._attempted_at is not None
            and self._clock() - self._attempted_at < self._min_refresh_s
        )

    def _due_in(self) -> float:
        """Seconds until the background refresh: max_age_s after a good fetch (whatever
        caused it), min_refresh_s after a failed one; now if none was tried."""
        if self._attempted_at is None or self._inflight is not None:
            return 0.0
        interval = self._max_age_s if self._last_ok else self._min_refresh_s
        return self._attempted_at + interval - self._clock()

    async def _keep_fresh(self) -> None:
        while True:
            if (delay := self._due_in()) > 0:
                await asyncio.sleep(delay)
            else:
                await self.refresh()

    async def _fetch(self) -> bool:
        try:
            keys = await self._download()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure keeps the last good set
            self._last_ok = False
            self._observe("failed")
            log.warning(
                "jwks_refresh_failed",
                url=self._url_shown,
                error=str(exc) or type(exc).__name__,
                kept_kids=sorted(self._keys),
            )
            return False
        else:
            if set(keys) != set(self._keys):
                log.info(
                    "jwks_keys", url=self._url_shown, kids=sorted(keys), was=sorted(self._keys)
                )
            self._keys = keys
            self._last_ok = True
            self._observe("ok")
            return True
        finally:
            self._inflight = None

    async def _download(self) -> dict[str, PyJWK]:
        if self._session is None:
            raise JwksUnavailable("the key source is not started")
        async with asyncio.timeout(self._timeout_s):
            async with self._session.get(self.url) as response:
                if response.status != 200:
                    raise JwksUnavailable(f"HTTP {response.status} from the JWKS URL")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise JwksUnavailable(f"the key set is larger than {MAX_BYTES} bytes")
        return parse_key_set(bytes(body))


def parse_key_set(body: bytes) -> dict[str, PyJWK]:
    """The usable signing keys of a JWKS document by kid; raises JwksUnavailable if none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JwksUnavailable(f"the key set is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable('the key set is not a JSON object with a "keys" list')
    keys: dict[str, PyJWK] = {}
    for jwk in document["keys"]:
        if not _public_signing_jwk(jwk) or jwk["kid"] in keys:  # the first of a repeated kid
            continue
        try:  # one by one: PyJWKSet lets some bad keys fail the whole set
            key = PyJWK(jwk)
        except (PyJWTError, NotImplementedError, ValueError, TypeError):  # not a usable key
            continue
        if key.algorithm_name in ALGORITHMS and key.Algorithm.check_key_length(key.key) is None:
            keys[jwk["kid"]] = key
    if skipped := len(document["keys"]) - len(keys):
        log.info("jwks_keys_skipped", skipped=skipped, usable=len(keys))
    if not keys:
        raise JwksUnavailable(
            "the key set has no usable signing key"
            f" ({', '.join(sorted(ALGORITHMS))}, with a kid, RSA at least 2048 bits)"
        )
    return keys


def _public_signing_jwk(jwk: Any) -> bool:
    return (
        isinstance(jwk, dict)
        and isinstance(jwk.get("kid"), str)
        and bool(jwk["kid"])
        and jwk.get("kty") in ("RSA", "EC", "OKP")
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", "RS256") in ALGORITHMS  # absent: implied by the key type
        and "d" not in jwk  # private material has no business here
    )
