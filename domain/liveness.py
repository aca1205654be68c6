"""Who is offline: the notifier's liveness rules, pure and clock-free.

The tracker is fed the presence topic (read whole), gateway heartbeat batches and the time,
and answers with verdicts to write: a ``student.offline`` / ``student.back_online`` event for
the log, and the ``AttemptLiveness`` record that keeps the verdict in presence.

Rules (docs/architecture.md, "Offline detection"):

- Clean close (``client_closed``, ``error``): offline(closed) at once when the attempt has no
  other open connection. ``server_shutdown`` waits a reconnect grace first (rolling restarts
  must not flap); ``superseded`` means the student connected again elsewhere: no verdict.
- Silent loss: no heartbeat for ``heartbeat_misses`` intervals -> offline(heartbeat_timeout).
  Gateways batch beats once a second, so a missing beat only counts once the attempt's gateway
  has sent a batch covering the deadline; a gateway that sends nothing is the next rule's case.
- Gateway lost: no batch from a gateway instance for ``gateway_timeout_ms``, or a new instance
  took its slot -> offline(gateway_lost) for attempts left without a live connection.
- Back online: a new connection (or fresh beats on a kept one) after an offline verdict.
- Flapping: a close within ``flap_window_ms`` of the attempt's previous offline verdict waits
  the reconnect grace too, so a page that reconnects in a loop is one incident, not dozens.

The log's own health gates the rules that infer loss from silence (gateway lost, heartbeat
timeout): the notifier writes a ``LogProbe`` to the heartbeat partition every
``probe_interval_ms`` and reads it back in order with the gateways' batches. A gateway is lost
only once a probe written after its deadline has come back while no batch of the gateway has:
the log demonstrably carried later records, so the silence is the gateway's, not the log's.
While the notifier's own probes are late or missing (Kafka stalled, the notifier paused) those
rules wait; when the log flows again every gateway and attempt is granted a fresh window from
that moment, as after a restart, because the batches of the stall may never arrive. Explicit
records (a close, a new instance on a slot) are evidence on their own and are always decided.

Verdicts are written presence record first, then the log event. A crash in between leaves a
verdict the log never heard of; ``start`` re-issues the offline events of verdicts written
within ``reemit_window_ms`` before the restart (same ids, so consumers that had them drop
them), and an attempt still connected gets its ``back_online`` at its next sign of life.

State survives restarts through the verdicts themselves: while replaying presence the tracker
takes its past ``AttemptLiveness`` records as truth; ``start(now)`` then grants every gateway
and connected attempt a fresh window, so a restart raises no offline storm, and reconciles
whatever changed while it was down. Event ids derive from attempt, reason and ``since``, so a
verdict redone after a crash carries the same id and consumers drop it.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field

from schemas.events import EventSource, OfflineReason, StudentBackOnline, StudentOffline
from schemas.presence import (
    AttemptLiveness,
    ExamWatch,
    GatewayHeartbeat,
    GatewayUp,
    PresenceRecord,
    StudentConnection,
    StudentDisconnection,
)

MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class LivenessConfig:
    gateway_timeout_ms: int = 3_000
    heartbeat_misses: int = 2
    reconnect_grace_ms: int = 5_000
    # A beat received this close before the deadline may still be in the gateway's next
    # batch; a batch cut this long before the deadline already counts as evidence.
    batch_slack_ms: int = 200
    # For attempts known only from a past verdict (their connection records compacted away).
    default_heartbeat_interval_ms: int = 5_000
    # The notifier's own probe: how often it is written, and how late one may come back before
    # the log counts as stalled (loss-by-silence rules wait, then grant fresh windows).
    probe_interval_ms: int = 500
    log_stall_ms: int = 1_000
    # A close this soon after the attempt's previous offline verdict waits the reconnect grace.
    flap_window_ms: int = 60_000
    # Offline verdicts written this long before a restart have their events re-issued.
    reemit_window_ms: int = 120_000


@dataclass(frozen=True)
class Verdict:
    """A decision to write: the log event first (if any), then the presence record."""

    liveness: AttemptLiveness
    event: StudentOffline | StudentBackOnline | None
    due_ms: int | None = None  # when the rule could first have known; lag = written - due
    reissued: bool = False  # an earlier verdict's event again, after a restart


@dataclass
class _Loss:
    reason: OfflineReason
    since: int
    not_before: int
    due: int


@dataclass
class _Conn:
    conn: str
    slot: int
    instance: str
    attempt: str


@dataclass
class _Gateway:
    slot: int
    instance: str
    window_ms: int  # its timeout counts from here: last batch, start, or a granted window
    last_batch_ms: int = -1
    lost: bool = False
    conns: set[str] = field(default_factory=set)
    awaiting: set[str] = field(default_factory=set)  # attempts past deadline, wanting a batch


@dataclass
class _Attempt:
    attempt: str
    exam: str
    student: str
    conns: set[str] = field(default_factory=set)
    interval_ms: int = 0
    last_seen_ms: int = 0  # last real sign of life (connection opened, heartbeat received)
    window_ms: int = 0  # heartbeat deadline counts from here (last sign or a granted window)
    slot: int | None = None
    verdict: AttemptLiveness | None = None
    loss: _Loss | None = None
    returned_at: int | None = None  # first sign of life since the verdict, if any
    scheduled_at: int | None = None
    verdict_written_ms: int | None = None  # Kafka time of the replayed verdict record
    last_offline_ms: int | None = None  # when the latest offline verdict was decided


def derived_id(*parts: object) -> str:
    """A readable event id from its causes; hashed when it would exceed the id limit."""
    text = ":".join(str(part) for part in parts)
    if len(text) <= MAX_ID_LENGTH:
        return text
    return f"{parts[0]}:{hashlib.sha256(text.encode()).hexdigest()[:40]}"


class LivenessTracker:
    def __init__(self, config: LivenessConfig, *, source_id: str) -> None:
        self._config = config
        self._source = EventSource(kind="notifier", id=source_id)
        self._gateways: dict[tuple[int, str], _Gateway] = {}
        self._retired: set[tuple[int, str]] = set()
        self._conns: dict[str, _Conn] = {}
        self._attempts: dict[str, _Attempt] = {}
        # Insertion-ordered so the same input always yields verdicts in the same order.
        self._dirty: dict[str, None] = {}
        self._deadlines: list[tuple[int, str]] = []
        self._started = False
        # Send time of the newest probe read back: the log has carried records up to here.
        self._log_ms = -1
        self._log_stalled = False
        self._stalls = 0
        self._reemit: list[str] = []

    # -- inspection ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    @property
    def connection_count(self) -> int:
        return sum(len(gw.conns) for gw in self._gateways.values() if not gw.lost)

    @property
    def offline_count(self) -> int:
        return sum(1 for att in self._attempts.values() if att.verdict and not att.verdict.online)

    def connected_by_exam(self) -> dict[str, int]:
        """Per exam, its attempts with a connection open on a gateway believed alive."""
        counts: dict[str, int] = {}
        lost = {key for key, gw in self._gateways.items() if gw.lost}
        conns = self._conns
        for att in self._attempts.values():
            # Read for every attempt each second: no list of gateways built per attempt.
            if att.conns and (
                not lost or any((conns[c].slot, conns[c].instance) not in lost for c in att.conns)
            ):
                counts[att.exam] = counts.get(att.exam, 0) + 1
        return counts

    @property
    def log_stalls(self) -> int:
        """How many times the log was found stalled (each ended with fresh windows)."""
        return self._stalls

    def log_flowing(self, now_ms: int) -> bool:
        """A probe written recently came back in time: silence now means something."""
        fresh = self._config.probe_interval_ms + self._config.log_stall_ms
        return not self._log_stalled and now_ms - self._log_ms <= fresh

    def longest_heartbeat_interval_ms(self) -> int:
        return max(
            (att.interval_ms for att in self._attempts.values() if att.conns),
            default=self._config.default_heartbeat_interval_ms,
        )

    def verdict(self, attempt: str) -> AttemptLiveness | None:
        att = self._attempts.get(attempt)
        return None if att is None else att.verdict

    # -- input ---------------------------------------------------------------------------

    def on_presence(self, key: bytes, record: PresenceRecord | None, ts_ms: int) -> None:
        """Apply one presence record (None: a tombstone); ``ts_ms`` is its Kafka timestamp."""
        match record:
            case None:
                self._on_tombstone(key, ts_ms)
            case GatewayUp():
                self._on_gateway_up(record)
            case StudentConnection():
                self._on_connection(record)
            case StudentDisconnection():
                self._on_disconnection(record)
            case AttemptLiveness():
                # Once live, the tracker's own state is ahead of the echoes of its writes.
                if not self._started:
                    att = self._attempt(record.attempt, record.exam, record.student)
                    if record.online:
                        att.last_seen_ms = max(att.last_seen_ms, record.since)
                    else:
                        att.last_offline_ms = ts_ms
                    att.verdict = record
                    att.verdict_written_ms = ts_ms
                    att.returned_at = None
            case ExamWatch():
                pass

    def on_heartbeat(self, beat: GatewayHeartbeat) -> None:
        if (beat.slot, beat.instance) in self._retired:
            return
        gw = self._gateway(beat.slot, beat.instance, seen_ms=beat.ts)
        gw.last_batch_ms = max(gw.last_batch_ms, beat.ts)
        if gw.lost:
            gw.lost = False
            for conn_id in gw.conns:
                self._touch(self._conns[conn_id].attempt)
        for attempt_id in gw.awaiting:
            self._touch(attempt_id)
        gw.awaiting.clear()
        for attempt_id, beat_ms in beat.students.items():
            att = self._attempts.get(attempt_id)
            if att is None:
                continue
            att.last_seen_ms = max(att.last_seen_ms, beat_ms)
            att.window_ms = max(att.window_ms, beat_ms)
            verdict = att.verdict
            if verdict is not None and not verdict.online and beat_ms > verdict.since:
                att.returned_at = _earliest(att.returned_at, beat_ms)
                self._touch(attempt_id)

    def on_probe(self, sent_ms: int, received_ms: int) -> None:
        """One of this notifier's own probes came back through the heartbeat partition."""
        self._log_ms = max(self._log_ms, sent_ms)
        if received_ms - sent_ms > self._config.log_stall_ms:
            self._mark_stalled()
            self._grant_windows(received_ms)
        elif self._log_stalled:
            self._log_stalled = False
            self._grant_windows(received_ms)

    def reissues(self) -> dict[str, tuple[str, int]]:
        """Offline events ``start`` will re-issue: event id -> (attempt, verdict written at)."""
        out = {}
        for attempt_id in self._reemit:
            att = self._attempts[attempt_id]
            verdict = att.verdict
            assert verdict is not None
            event_id = derived_id("offline", attempt_id, verdict.reason, verdict.since)
            out[event_id] = (attempt_id, att.verdict_written_ms or 0)
        return out

    def confirm_logged(self, attempt: str) -> None:
        """The verdict's event was found in the log: no need to re-issue it."""
        self._reemit = [a for a in self._reemit if a != attempt]

    def start(self, now_ms: int) -> None:
        """End of the replay: grant fresh windows and decide from here on."""
        self._grant_windows(now_ms)
        for gw in self._gateways.values():
            gw.lost = False
        self._log_ms = max(self._log_ms, now_ms)
        horizon = now_ms - self._config.reemit_window_ms
        for att in self._attempts.values():
            verdict = att.verdict
            if (
                verdict is not None
                and not verdict.online
                and verdict.reason is not None
                and not att.conns
                and (att.verdict_written_ms or 0) >= horizon
            ):
                self._reemit.append(att.attempt)
        self._started = True

    def tick(self, now_ms: int) -> list[Verdict]:
        """Verdicts due at ``now_ms``; call after each input batch and every tick interval."""
        if not self._started:
            return []
        if not self.log_flowing(now_ms):
            # Until a probe shows the log flowing again, silence proves nothing.
            self._mark_stalled()
        else:
            self._check_gateways()
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            at, attempt_id = heapq.heappop(self._deadlines)
            att = self._attempts[attempt_id]
            if att.scheduled_at == at:
                att.scheduled_at = None
            self._touch(attempt_id)
        verdicts = [self._reissue(self._attempts[a], now_ms) for a in self._reemit]
        self._reemit.clear()
        dirty, self._dirty = self._dirty, {}
        for attempt_id in dirty:
            verdict = self._decide(self._attempts[attempt_id], now_ms)
            if verdict is not None:
                verdicts.append(verdict)
        return verdicts

    # -- presence records ----------------------------------------------------------------

    def _on_gateway_up(self, up: GatewayUp) -> None:
        for old in [gw for gw in self._gateways.values() if gw.slot == up.slot]:
            if old.instance != up.instance:
                self._retire(old, due=up.started_at)
        self._gateway(up.slot, up.instance, seen_ms=up.started_at)

    def _on_connection(self, rec: StudentConnection) -> None:
        if (rec.slot, rec.instance) in self._retired:
            return
        gw = self._gateway(rec.slot, rec.instance, seen_ms=rec.opened_at)
        att = self._attempt(rec.attempt, rec.exam, rec.student)
        self._conns[rec.conn] = _Conn(rec.conn, rec.slot, rec.instance, rec.attempt)
        gw.conns.add(rec.conn)
        att.conns.add(rec.conn)
        att.interval_ms = round(rec.heartbeat_interval_s * 1000)
        att.last_seen_ms = max(att.last_seen_ms, rec.opened_at)
        att.window_ms = max(att.window_ms, rec.opened_at)
        att.slot = rec.slot
        if att.loss is not None and att.verdict is not None and not att.verdict.online:
            # A debounced close in between: the return that counts is this one.
            att.returned_at = rec.opened_at
        else:
            att.returned_at = _earliest(att.returned_at, rec.opened_at)
        att.loss = None
        self._touch(att.attempt)

    def _on_disconnection(self, rec: StudentDisconnection) -> None:
        if (rec.slot, rec.instance) in self._retired:
            return  # the slot's new instance already made these connections void
        att = self._attempt(rec.attempt, rec.exam, rec.student)
        self._drop_connection(rec.conn)
        self._touch(att.attempt)
        if rec.reason == "superseded":
            return
        flapping = (
            att.last_offline_ms is not None
            and rec.closed_at - att.last_offline_ms < self._config.flap_window_ms
        )
        grace = (
            self._config.reconnect_grace_ms if rec.reason == "server_shutdown" or flapping else 0
        )
        until = rec.closed_at + grace
        self._lose_if_alone(att, _Loss("closed", rec.closed_at, not_before=until, due=until))

    def _on_tombstone(self, key: bytes, ts_ms: int) -> None:
        if key.startswith(b"conn/"):
            # Normally after the disconnection record; alone, it is the only word of the close.
            conn = self._conns.get(key[len(b"conn/") :].decode())
            if conn is not None:
                att = self._attempts[conn.attempt]
                self._drop_connection(conn.conn)
                self._lose_if_alone(att, _Loss("closed", ts_ms, ts_ms, ts_ms))
        elif key.startswith(b"att/") and not self._started:
            known = self._attempts.get(key[len(b"att/") :].decode())
            if known is not None:
                known.verdict = None

    # -- decisions -----------------------------------------------------------------------

    def _mark_stalled(self) -> None:
        if not self._log_stalled:
            self._stalls += 1
        self._log_stalled = True

    def _grant_windows(self, now_ms: int) -> None:
        for gw in self._gateways.values():
            gw.window_ms = max(gw.window_ms, now_ms)
        for att in self._attempts.values():
            att.window_ms = max(att.window_ms, now_ms)
            self._touch(att.attempt)

    def _check_gateways(self) -> None:
        timeout = self._config.gateway_timeout_ms
        for gw in self._gateways.values():
            # Judged by the log's time, not the wall clock: only a probe written after the
            # deadline, read back before any batch of the gateway, shows the gateway is gone.
            if gw.lost or self._log_ms < gw.window_ms + timeout:
                continue
            gw.lost = True
            due = gw.window_ms + timeout
            for conn_id in gw.conns:
                att = self._attempts[self._conns[conn_id].attempt]
                self._lose_if_alone(att, _Loss("gateway_lost", att.last_seen_ms, due, due))
            for attempt_id in gw.awaiting:
                self._touch(attempt_id)
            gw.awaiting.clear()

    def _decide(self, att: _Attempt, now_ms: int) -> Verdict | None:
        live = self._live_gateways(att)
        verdict = att.verdict
        if live:
            att.loss = None
            if verdict is None:
                since = att.returned_at if att.returned_at is not None else att.last_seen_ms
                return self._online(att, since, event=None, due=None)
            if not verdict.online:
                if att.returned_at is None:
                    return None  # the connection is still there but silent
                back = StudentBackOnline(
                    id=derived_id("back_online", att.attempt, verdict.reason, verdict.since),
                    exam=att.exam,
                    attempt=att.attempt,
                    student=att.student,
                    ts=now_ms,
                    source=self._source,
                    offline_ms=max(0, att.returned_at - verdict.since),
                    reason=verdict.reason or "closed",
                )
                return self._online(att, att.returned_at, event=back, due=att.returned_at)
            return self._check_heartbeat(att, live, now_ms)
        if att.loss is not None:
            loss = att.loss
            if now_ms < loss.not_before:
                self._schedule(att, loss.not_before)
                return None
            att.loss = None
            if verdict is not None and not verdict.online:
                att.returned_at = None  # back and gone again before anyone was told
                return None
            return self._offline(att, loss.reason, loss.since, due=loss.due, now_ms=now_ms)
        if verdict is not None and verdict.online:
            return self._check_heartbeat(att, [], now_ms)
        return None

    def _check_heartbeat(self, att: _Attempt, live: list[_Gateway], now_ms: int) -> Verdict | None:
        interval = att.interval_ms or self._config.default_heartbeat_interval_ms
        due = att.window_ms + self._config.heartbeat_misses * interval
        if now_ms < due:
            self._schedule(att, due)
            return None
        if not self.log_flowing(now_ms):
            self._schedule(att, now_ms + self._config.probe_interval_ms)
            return None
        # The beat may be in a batch still on its way; only a batch cut after the deadline
        # shows it really is missing.
        behind = [gw for gw in live if gw.last_batch_ms < due - self._config.batch_slack_ms]
        if behind:
            for gw in behind:
                gw.awaiting.add(att.attempt)
            return None
        return self._offline(att, "heartbeat_timeout", att.last_seen_ms, due=due, now_ms=now_ms)

    def _offline(
        self, att: _Attempt, reason: OfflineReason, since: int, *, due: int, now_ms: int
    ) -> Verdict:
        event = self._offline_event(att, reason, since, now_ms)
        liveness = AttemptLiveness(
            exam=att.exam,
            attempt=att.attempt,
            student=att.student,
            online=False,
            since=since,
            reason=reason,
            slot=att.slot,
        )
        att.verdict = liveness
        att.returned_at = None
        att.last_offline_ms = now_ms
        return Verdict(liveness=liveness, event=event, due_ms=due)

    def _reissue(self, att: _Attempt, now_ms: int) -> Verdict:
        """The offline event of a replayed verdict, again: a crash may have lost it."""
        verdict = att.verdict
        assert verdict is not None and verdict.reason is not None
        event = self._offline_event(att, verdict.reason, verdict.since, now_ms)
        return Verdict(liveness=verdict, event=event, reissued=True)

    def _offline_event(
        self, att: _Attempt, reason: OfflineReason, since: int, now_ms: int
    ) -> StudentOffline:
        # The id derives from the causes only, so a verdict redone or re-issued keeps it.
        return StudentOffline(
            id=derived_id("offline", att.attempt, reason, since),
            exam=att.exam,
            attempt=att.attempt,
            student=att.student,
            ts=now_ms,
            source=self._source,
            reason=reason,
            since=since,
        )

    def _online(
        self, att: _Attempt, since: int, *, event: StudentBackOnline | None, due: int | None
    ) -> Verdict:
        liveness = AttemptLiveness(
            exam=att.exam,
            attempt=att.attempt,
            student=att.student,
            online=True,
            since=since,
            slot=att.slot,
        )
        att.verdict = liveness
        att.returned_at = None
        interval = att.interval_ms or self._config.default_heartbeat_interval_ms
        self._schedule(att, att.window_ms + self._config.heartbeat_misses * interval)
        return Verdict(liveness=liveness, event=event, due_ms=due)

    # -- bookkeeping ---------------------------------------------------------------------

    def _gateway(self, slot: int, instance: str, *, seen_ms: int) -> _Gateway:
        gw = self._gateways.get((slot, instance))
        if gw is None:
            gw = self._gateways[(slot, instance)] = _Gateway(slot, instance, window_ms=seen_ms)
        else:
            gw.window_ms = max(gw.window_ms, seen_ms)
        return gw

    def _attempt(self, attempt: str, exam: str, student: str) -> _Attempt:
        att = self._attempts.get(attempt)
        if att is None:
            att = self._attempts[attempt] = _Attempt(attempt, exam, student)
        return att

    def _retire(self, gw: _Gateway, *, due: int) -> None:
        """A new instance took the slot: the old one's connections are gone for good."""
        del self._gateways[(gw.slot, gw.instance)]
        self._retired.add((gw.slot, gw.instance))
        for conn_id in list(gw.conns):
            att = self._attempts[self._conns[conn_id].attempt]
            self._drop_connection(conn_id)
            self._lose_if_alone(att, _Loss("gateway_lost", att.last_seen_ms, due, due))
        for attempt_id in gw.awaiting:
            self._touch(attempt_id)

    def _drop_connection(self, conn_id: str) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        gw = self._gateways.get((conn.slot, conn.instance))
        if gw is not None:
            gw.conns.discard(conn_id)
        self._attempts[conn.attempt].conns.discard(conn_id)

    def _live_gateways(self, att: _Attempt) -> list[_Gateway]:
        live = []
        for conn_id in att.conns:
            conn = self._conns[conn_id]
            gw = self._gateways[(conn.slot, conn.instance)]
            if not gw.lost:
                live.append(gw)
        return live

    def _lose_if_alone(self, att: _Attempt, loss: _Loss) -> None:
        if not self._live_gateways(att):
            att.loss = loss
        self._touch(att.attempt)

    def _touch(self, attempt_id: str) -> None:
        self._dirty[attempt_id] = None

    def _schedule(self, att: _Attempt, at: int) -> None:
        if att.scheduled_at is not None and att.scheduled_at <= at:
            return  # an earlier wake-up re-checks and re-arms
        att.scheduled_at = at
        heapq.heappush(self._deadlines, (at, att.attempt))


def _earliest(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)
