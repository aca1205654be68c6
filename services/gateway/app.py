"""The gateway's aiohttp application: resources opened in order, closed in reverse.

Startup: Kafka producer -> Redis -> watches -> inbox positioned at the end of the slot's
deliveries partition -> ``GatewayUp`` and heartbeats -> accept connections.
Shutdown: stop accepting -> close every socket with 1001 (students record
``server_shutdown``) -> end watches -> stop the inbox -> flush and stop the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from adapters.jwks import JwksKeys
from adapters.kafka_clients import durable_producer, reader
from adapters.kafka_topics import verify_partitions
from adapters.ops_http import add_ops_routes, start_ops_server
from adapters.redis_client import redis_client
from adapters.revocations import RedisRevocations
from adapters.snapshot_store import RedisSnapshotStore, SnapshotStore
from adapters.tokens import Identity, TokenCodec, TokenError
from schemas.frames import ErrorFrame
from schemas.presence import GatewayUp, gateway_key
from services.gateway import protocol
from services.gateway.connection_log import expired_whom, who
from services.gateway.connections import (
    CLOSE_GOING_AWAY,
    CLOSE_TOO_MANY_CONNECTS,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    Connection,
    Hub,
    reset,
)
from services.gateway.deliveries import DeliveryInbox
from services.gateway.errors import Unavailable
from services.gateway.guards import Guards
from services.gateway.metrics import GatewayMetrics
from services.gateway.publisher import Publisher, now_ms
from services.gateway.session import Session, new_connection_id, token_from
from services.gateway.settings import GatewayOptions, GatewaySettings
from services.gateway.watches import Watches

log = structlog.get_logger(__name__)


@dataclass
class Lifecycle:
    ready: bool = False
    shutting_down: bool = False


SETTINGS = web.AppKey("settings", GatewaySettings)
METRICS = web.AppKey("metrics", GatewayMetrics)
HUB = web.AppKey("hub", Hub)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
CODEC = web.AppKey("codec", TokenCodec)
JWKS = web.AppKey("jwks", JwksKeys)
PUBLISHER = web.AppKey("publisher", Publisher)
SNAPSHOTS = web.AppKey("snapshots", SnapshotStore)
REVOCATIONS = web.AppKey("revocations", RedisRevocations)
WATCHES = web.AppKey("watches", Watches)
GUARDS = web.AppKey("guards", Guards)


def server_options(options: GatewayOptions) -> dict[str, Any]:
    """aiohttp server settings every way of running the gateway must pass (run_app, tests).

    aiohttp closes a connection whose keep-alive timer fires while it waits for a complete
    request, and the timer starts at accept: so it bounds the time to send the upgrade
    request, which a client dribbling one byte a second would otherwise hold forever.
    """
    return {"keepalive_timeout": options.handshake_timeout_s}


def create_app(
    settings: GatewaySettings, registry: CollectorRegistry | None = None
) -> web.Application:
    registry = registry if registry is not None else CollectorRegistry()
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = GatewayMetrics(registry)
    app[HUB] = Hub()
    app[LIFECYCLE] = Lifecycle()
    app[CODEC] = _codec(app, settings.gateway)
    if JWKS in app:
        app.cleanup_ctx.append(_jwks_keys)
    app.cleanup_ctx.extend([_kafka_producer, _redis, _watches, _inbox, _announce])
    app.on_shutdown.append(_close_connections)
    app.router.add_get("/ws", websocket_endpoint)
    lifecycle = app[LIFECYCLE]

    def ready() -> bool:
        return lifecycle.ready and not lifecycle.shutting_down

    options = settings.gateway
    if options.ops_port is None:
        add_ops_routes(app, registry, ready)
    else:
        ops_port = options.ops_port

        async def ops_server(_: web.Application) -> AsyncIterator[None]:
            # First up and last down: probes get answers while the rest starts and drains.
            runner = await start_ops_server(registry, ready, host=options.ops_host, port=ops_port)
            yield
            await runner.cleanup()

        app.cleanup_ctx.insert(0, ops_server)
    if settings.gateway.web_root is not None and settings.gateway.web_root.is_dir():
        add_web_routes(app, settings.gateway.web_root)
    return app


def add_web_routes(app: web.Application, root: Path) -> None:
    """The proctor dashboard at /, the demo exam page at /exam, web/ files under /static."""

    def page(name: str) -> web.RouteDef:
        async def handler(_: web.Request) -> web.FileResponse:
            return web.FileResponse(root / name, headers={"Cache-Control": "no-cache"})

        return web.get("/" if name == "dashboard.html" else "/exam", handler)

    app.router.add_routes([page("dashboard.html"), page("exam.html")])
    app.router.add_static("/static", root, follow_symlinks=False, append_version=False)
    app.router.add_static("/client", root / "client", follow_symlinks=False)


def _codec(app: web.Application, options: GatewayOptions) -> TokenCodec:
    if options.token_jwks_url is not None:
        refreshes = app[METRICS].jwks_refreshes
        app[JWKS] = JwksKeys(
            options.token_jwks_url,
            max_age_s=options.token_jwks_max_age_s,
            min_refresh_s=options.token_jwks_min_refresh_s,
            timeout_s=options.token_jwks_timeout_s,
            on_refresh=lambda outcome: refreshes.labels(outcome).inc(),
        )
    return TokenCodec(
        options.token_secret,
        issuer=options.token_issuer,
        leeway_s=options.token_leeway_s,
        jwks=app.get(JWKS),
        jwks_issuer=options.token_jwks_issuer,
        jwks_audience=options.token_jwks_audience,
    )


async def _jwks_keys(app: web.Application) -> AsyncIterator[None]:
    # The first fetch starts here and is not waited for: shared-secret tokens work meanwhile.
    async with app[JWKS]:
        yield


async def _kafka_producer(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with asyncio.timeout(settings.kafka.request_timeout_s * 3):
        await verify_partitions(settings.kafka, gateway_slot=settings.gateway.slot)
    producer = durable_producer(
        settings.kafka,
        client_id=settings.gateway.instance,
        linger_ms=settings.gateway.produce_linger_ms,
    )
    async with asyncio.timeout(settings.kafka.request_timeout_s):
        await producer.start()
    app[PUBLISHER] = Publisher(producer, settings)
    yield
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.gateway.shutdown_grace_s):
            await producer.flush()
    await producer.stop()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = redis_client(
        settings.redis, socket_timeout=settings.redis.timeout_s, socket_connect_timeout=2
    )
    app[SNAPSHOTS] = RedisSnapshotStore(client, settings.redis, topic=settings.kafka.events_topic)
    app[REVOCATIONS] = RedisRevocations(client, settings.redis)
    app[GUARDS] = Guards(client, settings.redis, settings.gateway, app[METRICS])
    yield
    await app[GUARDS].close()
    await client.aclose()


async def _watches(app: web.Application) -> AsyncIterator[None]:
    watches = Watches(app[SETTINGS], app[HUB], app[PUBLISHER], app[SNAPSHOTS], app[METRICS])
    app[WATCHES] = watches
    yield
    await watches.close()


async def _inbox(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    consumer = reader(settings.kafka, client_id=f"{settings.gateway.instance}-inbox")
    async with asyncio.timeout(settings.kafka.request_timeout_s):
        await consumer.start()
    inbox = DeliveryInbox(consumer, settings, app[HUB], app[WATCHES], app[METRICS])
    await inbox.start_at_end()
    task = asyncio.create_task(inbox.run(), name="inbox")
    task.add_done_callback(_unready_on_failure(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await consumer.stop()


async def _announce(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    options = settings.gateway
    publisher = app[PUBLISHER]
    await publisher.presence(
        gateway_key(options.slot),
        GatewayUp(
            slot=options.slot,
            instance=options.instance,
            started_at=now_ms(),
            heartbeat_interval_s=options.heartbeat_interval_s,
        ),
    )
    task = asyncio.create_task(publisher.run_heartbeats(), name="heartbeats")
    task.add_done_callback(_unready_on_failure(app))
    app[LIFECYCLE].ready = True
    log.info("gateway_ready", slot=options.slot, instance=options.instance, port=options.port)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _unready_on_failure(app: web.Application) -> Callable[[asyncio.Task[None]], None]:
    """A background loop that dies takes readiness with it, so the orchestrator replaces
    this gateway instead of letting it hold connections it can no longer serve."""

    def _check(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            app[LIFECYCLE].ready = False
            log.error("background_task_failed", task=task.get_name(), error=repr(task.exception()))

    return _check


async def _close_connections(app: web.Application) -> None:
    app[LIFECYCLE].shutting_down = True
    hub = app[HUB]
    for conn in list(hub.all):
        conn.close_soon(CLOSE_GOING_AWAY, "shutting_down")
    deadline = asyncio.get_running_loop().time() + app[SETTINGS].gateway.shutdown_grace_s
    while hub.all and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


async def _revoked(app: web.Application, jti: str) -> bool:
    try:
        return await app[REVOCATIONS].is_revoked(jti)
    except (TimeoutError, OSError, RedisError):
        # Fail open: an exam must not stop because Redis blinked; a revoked token still
        # expires on its own, and the next connect checks again.
        log.warning("revocation_check_failed", jti=jti)
        return False


async def websocket_endpoint(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    if app[LIFECYCLE].shutting_down:
        raise web.HTTPServiceUnavailable(text="shutting down")
    ws = web.WebSocketResponse(
        max_msg_size=settings.gateway.hard_max_frame_bytes,
        compress=False,
        decode_text=False,
        heartbeat=None,
    )
    await ws.prepare(request)
    identity: Identity | None = None
    try:
        identity = await app[CODEC].authenticate(token_from(request))
        if (problem := protocol.claims_problem(identity)) is not None:
            raise TokenError("token_invalid", f"claims the log cannot record: {problem}")
        if identity.jti is not None and await _revoked(app, identity.jti):
            raise TokenError("token_revoked", "the token has been revoked")
    except TokenError as exc:
        app[METRICS].frames_rejected.labels(exc.code).inc()
        refusal = ErrorFrame(code=exc.code, message=str(exc))
        whom: Mapping[str, object]
        if identity is not None:  # verified, but revoked or beyond what the log can hold
            whom = who(identity)
        else:
            whom = expired_whom(exc.expired)
        await _refuse(request, ws, refusal, CLOSE_UNAUTHORIZED, whom)
        return ws
    # Before anything reaches the log: churn must not become a stream of connected events.
    retry_after_ms = await app[GUARDS].connect_retry_after_ms(identity)
    if retry_after_ms is not None:
        app[METRICS].frames_rejected.labels("too_many_connects").inc()
        limit, window = settings.gateway.connect_limit, settings.gateway.connect_window_s
        refusal = ErrorFrame(
            code="too_many_connects",
            message=f"more than {limit} connections in {window:g} s; wait and reconnect",
            retry_after_ms=retry_after_ms,
        )
        await _refuse(request, ws, refusal, CLOSE_TOO_MANY_CONNECTS, who(identity))
        return ws
    conn = Connection(
        ws,
        identity,
        new_connection_id(settings.gateway.slot),
        max_frames=settings.gateway.send_queue_frames,
        send_timeout_s=settings.gateway.send_timeout_s,
        metrics=app[METRICS],
        transport=request.transport,
        close_grace_s=settings.gateway.close_grace_s,
    )
    session = Session(
        conn,
        settings=settings,
        hub=app[HUB],
        publisher=app[PUBLISHER],
        watches=app[WATCHES],
        snapshots=app[SNAPSHOTS],
        metrics=app[METRICS],
        guards=app[GUARDS],
    )
    writer = asyncio.create_task(conn.run_writer(), name=f"writer-{conn.id}")
    try:
        try:
            await session.open()
        except Unavailable as exc:
            conn.send(ErrorFrame(code="unavailable", message=str(exc), retry_after_ms=1000))
            conn.close_soon(CLOSE_TRY_AGAIN, "unavailable")
            return ws
        await session.read_loop()
    finally:
        await session.close()
        # Let queued frames (acks, the close reason) go out before the writer stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                while conn.pending and not ws.closed:
                    await asyncio.sleep(0.01)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        if not ws.closed:
            try:
                async with asyncio.timeout(settings.gateway.close_grace_s):
                    await ws.close()
            except (ConnectionError, TimeoutError):
                conn.abort()
    return ws


async def _refuse(
    request: web.Request,
    ws: web.WebSocketResponse,
    error: ErrorFrame,
    code: int,
    whom: Mapping[str, object],
) -> None:
    """Log the refusal (whom it was for, never the token), send one error frame and close;
    a peer that does not take them loses the socket."""
    log.info("refused", reason=error.code, remote=request.remote, **whom)
    grace = request.app[SETTINGS].gateway.close_grace_s
    try:
        async with asyncio.timeout(grace):
            await ws.send_str(error.model_dump_json(exclude_none=True))
            await ws.close(code=code, message=error.code.encode())
    except (ConnectionError, TimeoutError):
        if request.transport is not None:
            reset(request.transport)
