"""One client connection from welcome to close: the thin adapter around ``protocol``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import structlog
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from adapters.snapshot_store import SnapshotStore
from adapters.tokens import StudentIdentity
from domain.rate_limit import TokenBucket
from schemas.events import EventSource, StudentConnected
from schemas.frames import (
    ErrorFrame,
    ProctorSession,
    StudentSession,
    UnsubscribedFrame,
    WelcomeFrame,
    encode_ack,
)
from schemas.presence import CloseReason, StudentConnection, StudentDisconnection, connection_key
from services.gateway import protocol
from services.gateway.connection_log import who
from services.gateway.connections import (
    CLOSE_POLICY,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_BIG,
    Connection,
    Hub,
)
from services.gateway.errors import Unavailable
from services.gateway.guards import Guards, IdClaim
from services.gateway.limits import FloodMeter, PendingPublish
from services.gateway.metrics import GatewayMetrics
from services.gateway.publisher import Publisher, now_ms
from services.gateway.settings import GatewaySettings
from services.gateway.watches import Watches

log = structlog.get_logger(__name__)

_CLOSE_REASONS: dict[str | None, CloseReason] = {
    None: "client_closed",
    "superseded": "superseded",
    "shutting_down": "server_shutdown",
}


class Session:
    def __init__(
        self,
        conn: Connection,
        *,
        settings: GatewaySettings,
        hub: Hub,
        publisher: Publisher,
        watches: Watches,
        snapshots: SnapshotStore,
        metrics: GatewayMetrics,
        guards: Guards,
    ) -> None:
        self.conn = conn
        self._settings = settings
        self._options = settings.gateway
        self._hub = hub
        self._publisher = publisher
        self._watches = watches
        self._snapshots = snapshots
        self._metrics = metrics
        self._guards = guards
        self._bucket = TokenBucket(rate=self._options.rate_per_s, burst=self._options.rate_burst)
        self._flood = FloodMeter(
            limit=self._options.flood_close_after, window_s=self._options.flood_window_s
        )
        self._last_limit_error = 0.0
        self._connection_record: StudentConnection | None = None
        self._log = log.bind(conn=conn.id, **who(conn.identity))  # never the token
        self._logged_connect = False
        # Held, not looked up per frame: on Python 3.11 each get_running_loop() is a getpid()
        # system call; a gateway made 7.9 of them per socket write at S2, 2.4 with the loop
        # held here, in the id checks and in the publisher (perf trace, docs/benchmarks.md).
        self._loop = asyncio.get_running_loop()

    # -- open and close ---------------------------------------------------------------------

    async def open(self) -> None:
        """Register and announce the connection; raises ``Unavailable`` if Kafka is down."""
        identity = self.conn.identity
        for older in self._hub.add(self.conn):
            older.close_soon(CLOSE_SUPERSEDED, "superseded")
        self._metrics.connections.labels(identity.role).inc()
        self._publisher.connections = len(self._hub.all)
        if isinstance(identity, StudentIdentity):
            await self._open_student(identity)
        else:
            proctor = ProctorSession(proctor=identity.sub, exams=list(identity.exams))
            self.conn.send(self._welcome(proctor=proctor))
        self._log.info("connected")
        self._logged_connect = True

    async def _open_student(self, who: StudentIdentity) -> None:
        slot = self._options.slot
        connected = StudentConnected(
            id=f"conn-{self.conn.id}",
            exam=who.exam,
            attempt=who.attempt,
            student=who.sub,
            ts=now_ms(),
            source=EventSource(kind="gateway", id=self._options.instance, gateway=slot),
            name=who.name,
            attempt_no=who.attempt_no,
            time_end=who.time_end,
            conn=self.conn.id,
            gateway=slot,
        )
        health = self._publisher.health
        loop = self._loop
        if not health.admit(loop.time()):
            raise Unavailable("the event log is not taking events")
        try:
            async with asyncio.timeout(self._options.produce_timeout_s):
                await (await self._publisher.publish([connected]))
        except TimeoutError as exc:
            health.failed(loop.time())
            raise Unavailable("the event log did not answer") from exc
        except Unavailable:
            health.failed(loop.time())
            raise
        health.succeeded()
        self._connection_record = StudentConnection(
            conn=self.conn.id,
            slot=slot,
            instance=self._options.instance,
            exam=who.exam,
            attempt=who.attempt,
            student=who.sub,
            opened_at=connected.ts,
            heartbeat_interval_s=self._options.heartbeat_interval_s,
        )
        await self._publisher.presence(connection_key(self.conn.id), self._connection_record)
        self._publisher.heartbeat(who.attempt)
        session = StudentSession(
            exam=who.exam, attempt=who.attempt, student=who.sub, time_end=who.time_end
        )
        try:
            state = await self._snapshots.read_attempt(who.exam, who.attempt)
        except (TimeoutError, OSError, RedisError):
            state = None  # the page still works; it just starts without the stored timer
        if state is not None:
            session = session.model_copy(
                update={
                    "paused": state.view.paused,
                    "time_end": state.view.time_end,
                    "extended_s": state.view.extended_s,
                    "last_client_seq": state.last_client_seq,
                }
            )
        self.conn.send(self._welcome(student=session))

    def _welcome(
        self, *, student: StudentSession | None = None, proctor: ProctorSession | None = None
    ) -> WelcomeFrame:
        return WelcomeFrame(
            conn=self.conn.id,
            role=self.conn.identity.role,
            heartbeat_interval_s=self._options.heartbeat_interval_s,
            max_frame_bytes=self._options.max_frame_bytes,
            server_time=now_ms(),
            student=student,
            proctor=proctor,
        )

    async def close(self) -> None:
        conn = self.conn
        self._log.info(
            "disconnected" if self._logged_connect else "refused",
            reason=conn.close_reason or "client_closed",
            code=conn.ws.close_code,
        )
        self._hub.remove(conn)
        self._metrics.connections.labels(conn.identity.role).dec()
        self._publisher.connections = len(self._hub.all)
        for exam in list(conn.watching):
            await self._watches.unwatch(conn, exam)
        record = self._connection_record
        if record is None:
            return
        closed = StudentDisconnection(
            conn=record.conn,
            slot=record.slot,
            instance=record.instance,
            exam=record.exam,
            attempt=record.attempt,
            student=record.student,
            closed_at=now_ms(),
            reason=_CLOSE_REASONS.get(conn.close_reason, "error"),
        )
        try:
            await self._publisher.presence(connection_key(record.conn), closed)
            await self._publisher.presence(connection_key(record.conn), None)
        except Unavailable:
            # The notifier still learns it from missing heartbeats.
            log.warning("disconnect_not_recorded", conn=record.conn)

    # -- frames -----------------------------------------------------------------------------

    async def read_loop(self) -> None:
        ws = self.conn.ws
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await self._on_frame(message.data)
            elif message.type == WSMsgType.ERROR:
                if ws.close_code == CLOSE_TOO_BIG:
                    self.conn.close_reason = "frame_too_large"
                    self._metrics.frame_rejected("frame_too_large").inc()
                break
            if self.conn.close_reason is not None:
                break

    async def _on_frame(self, raw: bytes | str) -> None:
        if not self._bucket.take(time.monotonic()):
            self._throttled()
            return
        identity = self.conn.identity
        if isinstance(identity, StudentIdentity):
            # Any frame proves the page is alive; legacy clients send no heartbeats at all.
            self._publisher.heartbeat(identity.attempt)
        received = self._loop.time()
        decision = protocol.interpret(
            raw,
            self.conn.identity,
            gateway=self._options.slot,
            now_ms=now_ms(),
            max_frame_bytes=self._options.max_frame_bytes,
        )
        self._metrics.frame_in(type(decision).__name__).inc()
        match decision:
            case protocol.Heartbeat():
                pass  # already counted: every student frame is a heartbeat
            case protocol.Publish():
                await self._publish(decision, received)
            case protocol.ProctorCommand():
                await self._command(decision, received)
            case protocol.Watch():
                await self._watches.watch(self.conn, decision.exam)
            case protocol.Unwatch():
                await self._watches.unwatch(self.conn, decision.exam)
                self.conn.send(UnsubscribedFrame(exam=decision.exam))
            case protocol.Reject():
                self._reject(decision.error)

    def _reject(self, error: ErrorFrame) -> None:
        self._metrics.frame_rejected(error.code).inc()
        self.conn.send(error)

    def _throttled(self) -> None:
        self._metrics.frame_rejected("rate_limited").inc()
        now = time.monotonic()
        if self._flood.dropped(now):
            self._metrics.flood_closes.inc()
            self.conn.close_soon(CLOSE_POLICY, "flood")
            return
        if now - self._last_limit_error >= 1.0:
            self._last_limit_error = now
            retry_ms = int(self._bucket.retry_after() * 1000) + 1
            self.conn.send(
                ErrorFrame(
                    code="rate_limited",
                    message="too many frames; dropped frames were not acknowledged, resend them",
                    retry_after_ms=retry_ms,
                )
            )

    async def _publish(self, decision: protocol.Publish, received: float) -> None:
        """Publish and answer the frame exactly once within ``publish_deadline_s``.

        ``received`` is the loop time the frame was read. A frame answered ``unavailable``
        may still reach the log later (the producer retries); that copy gets no ack, the
        client resends the identical frame, and the views drop the repeat by id.
        """
        loop = self._loop
        ack_id = decision.ack_id
        health = self._publisher.health
        if not health.admit(loop.time()):
            self._metrics.log_stalled.set(1)
            self._unavailable(ack_id)
            return
        pending = PendingPublish(received)
        deadline = received + self._options.publish_deadline_s
        expiry = loop.call_at(deadline, self._expire, pending, ack_id)
        try:
            async with asyncio.timeout_at(deadline):
                if decision.fingerprint is not None and ack_id is not None:
                    claim = await self._guards.claim_id(
                        decision.id_scope, ack_id, decision.fingerprint
                    )
                    if claim is IdClaim.REUSED:
                        expiry.cancel()
                        pending.answer()
                        self._reject(
                            ErrorFrame(
                                code="id_reused",
                                message="this id was already used for a different frame;"
                                " a resend must repeat the frame unchanged",
                                id=ack_id,
                            )
                        )
                        return
                    if claim is IdClaim.RESEND:
                        key = (decision.id_scope, ack_id)
                        earlier = self._publisher.recent.get(key)
                        if earlier is not None and not earlier.cancelled():
                            # The same frame is being (or was) published here: its outcome
                            # answers this resend too, without a second copy in the log.
                            self._metrics.resends_joined.inc()
                            earlier.add_done_callback(
                                self._acknowledger(
                                    decision, ack_id, pending, expiry, received, joined=True
                                )
                            )
                            return
                done = await self._publisher.publish(decision.events)
                if decision.fingerprint is not None and ack_id is not None:
                    self._publisher.recent.track((decision.id_scope, ack_id), done)
        except (TimeoutError, Unavailable):
            expiry.cancel()
            health.failed(loop.time())
            if pending.answer():
                self._unavailable(ack_id)
            return

        done.add_done_callback(self._acknowledger(decision, ack_id, pending, expiry, received))

    def _acknowledger(
        self,
        decision: protocol.Publish,
        ack_id: str | None,
        pending: PendingPublish,
        expiry: asyncio.TimerHandle,
        received: float,
        *,
        joined: bool = False,
    ) -> Callable[[asyncio.Future[None]], None]:
        loop = self._loop
        health = self._publisher.health

        def _acknowledge(result: asyncio.Future[None]) -> None:
            expiry.cancel()
            if result.cancelled() or result.exception() is not None:
                health.failed(loop.time())
                if pending.answer():
                    self._unavailable(ack_id)
                return
            health.succeeded()
            self._metrics.log_stalled.set(0)
            if not joined:
                self._metrics.events_published.inc(len(decision.events))
            if not pending.answer():
                if not joined:
                    self._metrics.late_publishes.inc(len(decision.events))
                return
            self._metrics.publish_seconds.observe(loop.time() - received)
            if ack_id is not None:
                self.conn.send_raw(encode_ack(ack_id))

        return _acknowledge

    def _expire(self, pending: PendingPublish, ack_id: str | None) -> None:
        if pending.answer():
            self._publisher.health.failed(self._loop.time())
            self._metrics.log_stalled.set(1)
            self._metrics.publish_deadline_missed.inc()
            self._unavailable(ack_id)

    async def _command(self, decision: protocol.ProctorCommand, received: float) -> None:
        event = decision.event
        assert event.attempt is not None
        try:
            state = await self._snapshots.read_attempt(event.exam, event.attempt)
        except (TimeoutError, OSError, RedisError):
            self._unavailable(decision.ack_id)
            return
        if state is None:
            self._reject(
                ErrorFrame(
                    code="unknown_attempt",
                    message=f"no attempt {event.attempt!r} in exam {event.exam!r}",
                    id=decision.ack_id,
                )
            )
            return
        event = event.model_copy(update={"student": state.view.student})
        publish = protocol.Publish(
            events=(event,), ack_id=decision.ack_id, fingerprint=decision.fingerprint
        )
        await self._publish(publish, received)

    def _unavailable(self, frame_id: str | None) -> None:
        self._reject(
            ErrorFrame(
                code="unavailable",
                message="the event log did not take the event; resend it",
                id=frame_id,
                retry_after_ms=1000,
            )
        )


def new_connection_id(slot: int) -> str:
    return f"c{slot}-{uuid.uuid4().hex[:16]}"


def token_from(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token")
