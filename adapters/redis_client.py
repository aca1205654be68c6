"""Redis clients: the one place settings become a client, with AUTH and TLS.

The URL carries the address, the database, a user and even a password
(``redis://:pw@host:6379/0``), and ``rediss://`` turns TLS on; what a URL should not carry is
here: the password from ``PROCTOR_REDIS__PASSWORD_FILE`` (a mounted Secret, read when the
client is made, i.e. at start, never logged) and the TLS files (``ssl_ca_certs``, and
``ssl_certfile`` with ``ssl_keyfile`` for a client certificate). The server's certificate is
verified and its host name checked (redis-py's defaults; the URL's query could say otherwise),
against the system's CAs unless ``ssl_ca_certs`` names others.

Every place that makes a Redis client calls ``redis_client``; callers add their own options
(socket timeouts, pool size) as keyword arguments.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from adapters.settings import RedisSettings, SecretFileError, read_secret_file


class RedisSecurityError(RuntimeError):
    """The Redis password file cannot be read (message: variable and path, never a secret)."""


def security_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """``password`` and the ``ssl_*`` files, as ``Redis.from_url`` takes them."""
    options: dict[str, Any] = {}
    if settings.password_file:
        try:
            options["password"] = read_secret_file(
                settings.password_file, "PROCTOR_REDIS__PASSWORD_FILE"
            )
        except SecretFileError as exc:
            raise RedisSecurityError(str(exc)) from None
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if value := getattr(settings, name):
            options[name] = value
    return options


def redis_client(settings: RedisSettings, **kw: Any) -> aioredis.Redis:
    """A client for ``settings.url`` with the password file and TLS files applied; ``kw`` are
    the caller's own options (``socket_timeout``, ``max_connections``...)."""
    security = security_kwargs(settings)
    clash = sorted(security.keys() & kw.keys())
    if clash:
        raise TypeError(f"redis_client: {', '.join(clash)} come from the settings, not kw")
    return aioredis.Redis.from_url(settings.url, **security, **kw)
