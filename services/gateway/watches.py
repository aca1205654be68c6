"""Proctors watching exams: one live ``ExamView`` per watched exam on this gateway.

The first proctor of an exam triggers the gap-free handshake (presence ``ExamWatch`` ->
router ``WatchReady`` -> snapshot whose watermarks reach the router's positions); later
proctors of the same exam get the live view at once. The last one to leave ends the watch.

While the status service rebuilds a lost Redis snapshot from the log, the snapshot is not
served (it may lack attempts): the handshake keeps waiting within ``watch_timeout_s``, then
answers ``snapshot_timeout`` with ``retry_after_ms`` (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from redis.exceptions import RedisError

from adapters.snapshot_store import SnapshotIncomplete, SnapshotStore
from schemas.deliveries import ForProctors, WatchReady
from schemas.events import ExamEvent
from schemas.frames import ErrorFrame, EventsFrame, SnapshotFrame
from schemas.presence import ExamWatch, watch_key
from services.gateway.connections import Connection, Hub
from services.gateway.errors import Unavailable, WatchFailed
from services.gateway.exam_views import Applied, ExamView
from services.gateway.metrics import GatewayMetrics
from services.gateway.publisher import Publisher
from services.gateway.settings import GatewaySettings

log = structlog.get_logger(__name__)

_SNAPSHOT_POLL_S = 0.02
_REBUILD_POLL_S = 0.25
REBUILD_RETRY_AFTER_MS = 2000


class Watches:
    def __init__(
        self,
        settings: GatewaySettings,
        hub: Hub,
        publisher: Publisher,
        snapshots: SnapshotStore,
        metrics: GatewayMetrics,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._publisher = publisher
        self._snapshots = snapshots
        self._metrics = metrics
        self._views: dict[str, ExamView] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._syncs: dict[str, asyncio.Task[None]] = {}

    # -- proctors ---------------------------------------------------------------------------

    async def watch(self, conn: Connection, exam: str) -> None:
        if exam in conn.watching:
            return
        conn.watching.add(exam)
        self._hub.watchers[exam].add(conn)
        view = self._views.get(exam)
        if view is not None:
            if view.live:
                conn.send(SnapshotFrame(exam=exam, students=view.rows()))
            return  # still syncing: the sync sends the snapshot to every watcher
        view = ExamView(
            exam=exam,
            request=uuid.uuid4().hex,
            log_partitions=self._settings.kafka.events_partitions,
        )
        self._views[exam] = view
        self._ready[exam] = asyncio.Event()
        self._metrics.watched_exams.set(len(self._views))
        self._syncs[exam] = asyncio.create_task(self._sync(view), name=f"watch-{exam}")

    async def unwatch(self, conn: Connection, exam: str) -> None:
        conn.watching.discard(exam)
        conn.forget_exam(exam)
        watchers = self._hub.watchers.get(exam)
        if watchers is not None:
            watchers.discard(conn)
        if not watchers:
            await self._end(exam)

    async def _end(self, exam: str) -> None:
        self._hub.watchers.pop(exam, None)
        if self._views.pop(exam, None) is None:
            return
        self._ready.pop(exam, None)
        self._metrics.watched_exams.set(len(self._views))
        sync = self._syncs.pop(exam, None)
        if sync is not None and not sync.done():
            sync.cancel()
        try:
            await self._publisher.presence(watch_key(self._settings.gateway.slot, exam), None)
        except Unavailable:
            log.warning("watch_end_not_recorded", exam=exam)

    async def _sync(self, view: ExamView) -> None:
        started = time.monotonic()
        rebuilding: SnapshotIncomplete | None = None
        try:
            async with asyncio.timeout(self._settings.gateway.watch_timeout_s):
                await self._publisher.presence(
                    watch_key(self._settings.gateway.slot, view.exam),
                    ExamWatch(
                        slot=self._settings.gateway.slot,
                        instance=self._settings.gateway.instance,
                        exam=view.exam,
                        request=view.request,
                    ),
                )
                await self._ready[view.exam].wait()
                while True:
                    try:
                        states, marks = await self._snapshots.read_exam(view.exam)
                    except SnapshotIncomplete as exc:
                        rebuilding = exc  # never served: it may lack attempts
                        await asyncio.sleep(_REBUILD_POLL_S)
                        continue
                    rebuilding = None
                    if view.snapshot_fresh(marks):
                        break
                    await asyncio.sleep(_SNAPSHOT_POLL_S)
        except (TimeoutError, Unavailable, RedisError, OSError) as exc:
            log.warning(
                "watch_failed", exam=view.exam, error=repr(exc), rebuilding=rebuilding is not None
            )
            if rebuilding is not None:
                await self._fail(view.exam, WatchFailed(str(rebuilding)), REBUILD_RETRY_AFTER_MS)
            else:
                await self._fail(view.exam, WatchFailed(str(exc) or "timed out"))
            return
        applied = view.load(states)
        self._metrics.watch_seconds.observe(time.monotonic() - started)
        snapshot = SnapshotFrame(exam=view.exam, students=view.rows())
        notable = [a.notable for a in applied if a.notable is not None]
        for conn in self._hub.watchers.get(view.exam, ()):
            conn.send(snapshot)
            if notable:
                conn.send(EventsFrame(exam=view.exam, events=notable))

    async def _fail(self, exam: str, exc: WatchFailed, retry_after_ms: int | None = None) -> None:
        error = ErrorFrame(
            code="snapshot_timeout",
            message=f"could not watch {exam}: {exc}",
            retry_after_ms=retry_after_ms,
        )
        for conn in list(self._hub.watchers.get(exam, ())):
            conn.send(error)
            conn.watching.discard(exam)
        self._syncs.pop(exam, None)
        await self._end(exam)

    # -- deliveries -------------------------------------------------------------------------

    def on_ready(self, ready: WatchReady) -> None:
        view = self._views.get(ready.exam)
        if view is None:
            return
        view.on_ready(ready)
        if view.router_ready:
            self._ready[ready.exam].set()

    def on_events(self, items: list[ForProctors]) -> None:
        """Apply a batch of log events; each watcher gets one frame of rows per exam."""
        touched: dict[str, list[Applied]] = {}
        for item in items:
            view = self._views.get(item.exam)
            if view is None:
                continue
            applied = view.offer(item)
            if applied is not None:
                touched.setdefault(item.exam, []).append(applied)
        for exam, changes in touched.items():
            notable: list[ExamEvent] = [c.notable for c in changes if c.notable is not None]
            events = EventsFrame(exam=exam, events=notable) if notable else None
            for conn in self._hub.watchers.get(exam, ()):
                for change in changes:
                    if change.row is not None:
                        conn.send_row(change.row)
                if events is not None:
                    conn.send(events)

    async def close(self) -> None:
        for exam in list(self._views):
            await self._end(exam)
