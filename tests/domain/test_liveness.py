"""The notifier's liveness rules, fed presence records, heartbeat batches and the time."""

from __future__ import annotations

from domain.liveness import LivenessConfig, LivenessTracker, Verdict, derived_id
from schemas.events import StudentBackOnline, StudentOffline
from schemas.presence import (
    AttemptLiveness,
    CloseReason,
    ExamWatch,
    GatewayHeartbeat,
    GatewayUp,
    PresenceRecord,
    StudentConnection,
    StudentDisconnection,
    connection_key,
    gateway_key,
    liveness_key,
    watch_key,
)

T0 = 1_700_000_000_000
INTERVAL_S = 5.0
CONFIG = LivenessConfig(gateway_timeout_ms=3_000, heartbeat_misses=2, reconnect_grace_ms=5_000)


class Gateway:
    """Writes what a gateway would, into a tracker (and keeps the records for replays)."""

    def __init__(self, tracker: LivenessTracker, slot: int = 0, instance: str = "gw-a") -> None:
        self.tracker = tracker
        self.slot = slot
        self.instance = instance
        self.presence: list[tuple[bytes, PresenceRecord | None, int]] = []

    def write(self, key: bytes, record: PresenceRecord | None, ts: int) -> None:
        self.presence.append((key, record, ts))
        self.tracker.on_presence(key, record, ts)

    def up(self, ts: int) -> None:
        record = GatewayUp(
            slot=self.slot, instance=self.instance, started_at=ts, heartbeat_interval_s=INTERVAL_S
        )
        self.write(gateway_key(self.slot), record, ts)

    def connect(self, attempt: str, conn: str, ts: int, interval_s: float = INTERVAL_S) -> None:
        record = StudentConnection(
            conn=conn,
            slot=self.slot,
            instance=self.instance,
            exam="e1",
            attempt=attempt,
            student=f"s-{attempt}",
            opened_at=ts,
            heartbeat_interval_s=interval_s,
        )
        self.write(connection_key(conn), record, ts)

    def disconnect(self, attempt: str, conn: str, ts: int, reason: CloseReason) -> None:
        record = StudentDisconnection(
            conn=conn,
            slot=self.slot,
            instance=self.instance,
            exam="e1",
            attempt=attempt,
            student=f"s-{attempt}",
            closed_at=ts,
            reason=reason,
        )
        self.write(connection_key(conn), record, ts)
        self.write(connection_key(conn), None, ts)

    def beat(self, ts: int, **students: int) -> None:
        self.tracker.on_heartbeat(
            GatewayHeartbeat(
                slot=self.slot,
                instance=self.instance,
                ts=ts,
                connections=len(students),
                students=students,
            )
        )


def tracker() -> LivenessTracker:
    return LivenessTracker(CONFIG, source_id="notifier-test")


def started(now: int = T0) -> tuple[LivenessTracker, Gateway]:
    t = tracker()
    gw = Gateway(t)
    gw.up(now)
    t.start(now)
    return t, gw


def tick(t: LivenessTracker, now: int) -> list[Verdict]:
    """A tick with the log flowing: the notifier's probe of this instant came straight back."""
    t.on_probe(now, now)
    return t.tick(now)


def events(verdicts: list[Verdict]) -> list[StudentOffline | StudentBackOnline]:
    return [v.event for v in verdicts if v.event is not None]


def offline(verdicts: list[Verdict]) -> list[StudentOffline]:
    return [e for e in events(verdicts) if isinstance(e, StudentOffline)]


def run(
    t: LivenessTracker, gw: Gateway, start: int, end: int, beats: dict[str, int]
) -> list[Verdict]:
    """Tick every 200 ms; the gateway batches once a second; ``beats``: attempt -> period ms."""
    out: list[Verdict] = []
    last_beat = {attempt: start for attempt in beats}
    for now in range(start, end + 1, 200):
        if (now - start) % 1000 == 0:
            due = {a: now for a, period in beats.items() if now - last_beat[a] >= period}
            last_beat.update(due)
            gw.beat(now, **due)
        out += tick(t, now)
    return out


def test_first_connection_records_an_online_verdict_without_an_event() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    [verdict] = tick(t, T0 + 20)
    assert verdict.event is None
    assert verdict.liveness.online and verdict.liveness.since == T0 + 10
    assert t.connection_count == 1


def test_clean_close_is_offline_at_once_with_a_deterministic_id() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 500, "client_closed")
    [event] = offline(tick(t, T0 + 510))
    assert (event.reason, event.since, event.attempt, event.student) == (
        "closed",
        T0 + 500,
        "a1",
        "s-a1",
    )
    assert event.id == derived_id("offline", "a1", "closed", T0 + 500)
    assert event.source.kind == "notifier"
    assert t.verdict("a1") == AttemptLiveness(
        exam="e1",
        attempt="a1",
        student="s-a1",
        online=False,
        since=T0 + 500,
        reason="closed",
        slot=0,
    )
    assert tick(t, T0 + 60_000) == []


def test_close_with_another_open_connection_is_not_offline() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    gw.connect("a1", "c2", T0 + 20)
    tick(t, T0 + 30)
    gw.disconnect("a1", "c1", T0 + 500, "error")
    assert tick(t, T0 + 510) == []
    assert t.verdict("a1") is not None and t.verdict("a1").online  # type: ignore[union-attr]


def test_superseded_is_not_offline_even_before_the_new_connection_arrives() -> None:
    t, gw = started()
    other = Gateway(t, slot=1, instance="gw-b")
    other.up(T0)
    gw.connect("a1", "c1", T0 + 10)
    tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 400, "superseded")
    assert tick(t, T0 + 410) == []
    other.connect("a1", "c2", T0 + 420)
    assert events(tick(t, T0 + 430)) == []


def test_server_shutdown_waits_the_grace_then_is_closed() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "server_shutdown")
    assert tick(t, T0 + 1_010) == []
    assert tick(t, T0 + 5_990) == []
    [event] = offline(tick(t, T0 + 6_000))
    assert (event.reason, event.since) == ("closed", T0 + 1_000)


def test_server_shutdown_then_reconnect_within_grace_raises_nothing() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "server_shutdown")
    tick(t, T0 + 1_010)
    replacement = Gateway(t, slot=0, instance="gw-a2")
    replacement.up(T0 + 2_000)
    replacement.connect("a1", "c2", T0 + 2_500)
    assert events(tick(t, T0 + 2_510)) == []
    assert events(run(t, replacement, T0 + 3_000, T0 + 12_000, {"a1": 1_000})) == []


def test_silent_loss_is_heartbeat_timeout_once_a_batch_covers_the_deadline() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    gw.connect("a2", "c2", T0, interval_s=1.0)
    verdicts = run(t, gw, T0, T0 + 3_000, {"a1": 1_000, "a2": 1_000})
    # a1 stops after its beat at T0 + 3 s; a2 keeps going.
    verdicts = run(t, gw, T0 + 3_200, T0 + 8_000, {"a2": 1_000})
    [event] = offline(verdicts)
    assert (event.attempt, event.reason, event.since) == ("a1", "heartbeat_timeout", T0 + 3_000)
    assert event.id == derived_id("offline", "a1", "heartbeat_timeout", T0 + 3_000)
    # Budget: known within two intervals plus one second of the last beat.
    assert event.ts <= T0 + 3_000 + 2_000 + 1_000


def test_no_timeout_while_the_gateway_has_not_reported_past_the_deadline() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    gw.beat(T0 + 1_000, a1=T0 + 1_000)
    # Deadline T0 + 3 s passes, but the last batch was cut at T0 + 2.5 s: the beat that
    # arrived just after may be in the next batch.
    gw.beat(T0 + 2_500)
    assert events(tick(t, T0 + 3_100)) == []
    gw.beat(T0 + 3_400, a1=T0 + 2_900)
    assert events(tick(t, T0 + 3_450)) == []
    # The next batch covers the new deadline (T0 + 4.9 s) without a beat: now it is missing.
    gw.beat(T0 + 5_000)
    [event] = offline(tick(t, T0 + 5_000))
    assert (event.reason, event.since) == ("heartbeat_timeout", T0 + 2_900)


def test_crashed_gateway_is_gateway_lost_not_heartbeat_timeout() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    gw.connect("a2", "c2", T0, interval_s=1.0)
    run(t, gw, T0, T0 + 2_000, {"a1": 1_000, "a2": 1_000})
    # The gateway dies right after its batch at T0 + 2 s.
    verdicts = [v for now in range(T0 + 2_200, T0 + 6_000, 200) for v in tick(t, now)]
    lost = offline(verdicts)
    assert {(e.attempt, e.reason, e.since) for e in lost} == {
        ("a1", "gateway_lost", T0 + 2_000),
        ("a2", "gateway_lost", T0 + 2_000),
    }
    assert all(e.ts == T0 + 5_000 for e in lost)
    assert all(v.due_ms == T0 + 5_000 for v in verdicts)
    assert t.connection_count == 0


def test_new_instance_on_the_slot_ends_the_old_connections() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    gw.connect("a2", "c2", T0 + 10)
    tick(t, T0 + 20)
    gw.beat(T0 + 1_000, a1=T0 + 900, a2=T0 + 950)
    replacement = Gateway(t, slot=0, instance="gw-a2")
    replacement.up(T0 + 1_500)
    replacement.connect("a2", "c3", T0 + 1_400)  # a2 came back in time
    verdicts = tick(t, T0 + 1_600)
    [event] = offline(verdicts)
    assert (event.attempt, event.reason, event.since) == ("a1", "gateway_lost", T0 + 900)
    # Old instance's late records change nothing.
    gw.beat(T0 + 2_000, a1=T0 + 1_900)
    gw.disconnect("a1", "c1", T0 + 2_000, "server_shutdown")
    assert events(run(t, replacement, T0 + 2_000, T0 + 12_000, {"a2": 1_000})) == []


def test_reconnect_after_offline_is_back_online_with_its_duration() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "client_closed")
    tick(t, T0 + 1_010)
    gw.connect("a1", "c2", T0 + 4_000)
    [verdict] = tick(t, T0 + 4_010)
    assert isinstance(verdict.event, StudentBackOnline)
    assert (verdict.event.offline_ms, verdict.event.reason) == (3_000, "closed")
    assert verdict.event.id == derived_id("back_online", "a1", "closed", T0 + 1_000)
    assert verdict.liveness.online and verdict.liveness.since == T0 + 4_000


def test_beats_resuming_on_a_kept_connection_are_back_online() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    run(t, gw, T0, T0 + 1_000, {"a1": 1_000})
    [event] = offline(run(t, gw, T0 + 1_200, T0 + 5_000, {}))
    assert event.reason == "heartbeat_timeout"
    gw.beat(T0 + 5_100, a1=T0 + 1_000)  # stale time again: still offline
    assert tick(t, T0 + 5_100) == []
    gw.beat(T0 + 6_000, a1=T0 + 5_800)
    [back] = events(tick(t, T0 + 6_000))
    assert isinstance(back, StudentBackOnline)
    assert (back.offline_ms, back.reason) == (4_800, "heartbeat_timeout")


def replay(records: list[tuple[bytes, PresenceRecord | None, int]]) -> LivenessTracker:
    t = tracker()
    for key, record, ts in records:
        t.on_presence(key, record, ts)
    return t


def written(verdicts: list[Verdict]) -> list[tuple[bytes, PresenceRecord | None, int]]:
    return [(liveness_key(v.liveness.attempt), v.liveness, v.liveness.since) for v in verdicts]


def test_restart_grants_fresh_windows_and_raises_no_storm() -> None:
    t, gw = started()
    for i in range(50):
        gw.connect(f"a{i}", f"c{i}", T0, interval_s=1.0)
    students = {f"a{i}": 1_000 for i in range(50)}
    verdicts = run(t, gw, T0, T0 + 5_000, students)
    assert offline(verdicts) == []
    # The notifier was down for 20 s; students kept beating (the batches it missed are gone).
    restarted = replay(gw.presence + written(verdicts))
    restarted_gw = Gateway(restarted)
    restart = T0 + 25_000
    # The heartbeats read back on restart cover only some students (longer intervals).
    restarted_gw.beat(restart - 1_000, **{f"a{i}": restart - 1_200 for i in range(25)})
    restarted.start(restart)
    assert events(run(restarted, restarted_gw, restart, restart + 10_000, students)) == []


def test_restart_keeps_offline_verdicts_and_reports_back_online_durations() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    gw.connect("a2", "c2", T0 + 10)
    verdicts = tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "client_closed")
    verdicts += tick(t, T0 + 1_010)
    restarted = replay(gw.presence + written(verdicts))
    restarted.start(T0 + 200_000)
    # a1 is already known offline (long ago): no repeat; a2 is still connected: no event.
    assert events(tick(restarted, T0 + 200_000)) == []
    restarted.on_presence(
        connection_key("c3"),
        StudentConnection(
            conn="c3",
            slot=0,
            instance="gw-a",
            exam="e1",
            attempt="a1",
            student="s-a1",
            opened_at=T0 + 201_000,
            heartbeat_interval_s=INTERVAL_S,
        ),
        T0 + 201_000,
    )
    [back] = events(tick(restarted, T0 + 201_010))
    assert isinstance(back, StudentBackOnline) and back.offline_ms == 200_000


def test_restart_redoes_a_verdict_lost_in_a_crash_with_the_same_id() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    verdicts = tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "error")
    [first] = offline(tick(t, T0 + 1_010))
    # Crash after the log write, before the presence verdict: presence still says online.
    restarted = replay(gw.presence + written(verdicts))
    restarted.start(T0 + 5_000)
    [again] = offline(tick(restarted, T0 + 5_000))
    assert again.id == first.id


def test_restart_during_a_shutdown_grace_still_honours_it() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    verdicts = tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "server_shutdown")
    restarted = replay(gw.presence + written(verdicts))
    restarted.start(T0 + 2_000)
    assert tick(restarted, T0 + 2_000) == []
    [event] = offline(tick(restarted, T0 + 6_000))
    assert event.since == T0 + 1_000


def test_own_verdict_echoes_are_ignored_once_live() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    [online] = tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 100, "client_closed")
    [off] = tick(t, T0 + 110)
    gw.connect("a1", "c2", T0 + 200)
    tick(t, T0 + 210)
    # The echo of the older offline verdict arrives after the back-online decision.
    t.on_presence(liveness_key("a1"), off.liveness, T0 + 220)
    watch = ExamWatch(slot=0, instance="gw-a", exam="e1", request="r")
    t.on_presence(watch_key(0, "e1"), watch, T0)
    assert tick(t, T0 + 230) == []
    assert t.verdict("a1") is not None and t.verdict("a1").online  # type: ignore[union-attr]
    assert online.liveness.online


def test_ids_stay_within_the_schema_limit_for_long_attempt_ids() -> None:
    long_attempt = "a" * 126
    t, gw = started()
    gw.connect(long_attempt, "c1", T0 + 10)
    tick(t, T0 + 20)
    gw.disconnect(long_attempt, "c1", T0 + 100, "client_closed")
    [event] = offline(tick(t, T0 + 110))
    assert len(event.id) <= 128
    assert event.id == derived_id("offline", long_attempt, "closed", T0 + 100)


def test_nothing_is_decided_before_the_replay_ends() -> None:
    t = tracker()
    gw = Gateway(t)
    gw.connect("a1", "c1", T0)
    gw.disconnect("a1", "c1", T0 + 10, "client_closed")
    assert tick(t, T0 + 100_000) == []
    t.start(T0 + 100_000)
    [event] = offline(tick(t, T0 + 100_000))
    assert event.reason == "closed"


def test_a_reconnect_that_closes_before_any_decision_leaves_the_student_offline() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "client_closed")
    tick(t, T0 + 1_010)
    gw.connect("a1", "c2", T0 + 2_000)
    gw.disconnect("a1", "c2", T0 + 2_050, "client_closed")
    assert tick(t, T0 + 2_100) == []
    gw.connect("a1", "c3", T0 + 9_000)
    [back] = events(tick(t, T0 + 9_010))
    assert isinstance(back, StudentBackOnline) and back.offline_ms == 8_000


# -- the log's own health ------------------------------------------------------------------


def stalled_run(t: LivenessTracker, gw: Gateway, start: int, end: int) -> list[Verdict]:
    """Kafka stalled: no batch and no probe reaches the notifier, the wall clock runs on."""
    return [v for now in range(start, end + 1, 200) for v in t.tick(now)]


def test_a_stalled_log_is_not_every_gateway_dying() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    gw.connect("a2", "c2", T0, interval_s=1.0)
    run(t, gw, T0, T0 + 2_000, {"a1": 1_000, "a2": 1_000})
    assert stalled_run(t, gw, T0 + 2_200, T0 + 92_000) == []
    # The log flows again: the probes queued during the stall come back late, then the
    # gateway's next batches (the beats of the stall were lost with their expired batches).
    t.on_probe(T0 + 50_000, T0 + 92_100)
    assert not t.log_flowing(T0 + 92_100) and t.log_stalls == 1
    gw.beat(T0 + 92_150)  # a batch cut after every deadline, naming nobody
    assert events(tick(t, T0 + 92_200)) == []
    # Fresh windows from the recovery: students beating again are never offline.
    assert offline(run(t, gw, T0 + 92_400, T0 + 110_000, {"a1": 1_000, "a2": 1_000})) == []


def test_a_gateway_that_died_during_a_stall_is_lost_once_the_log_flows() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    run(t, gw, T0, T0 + 2_000, {"a1": 1_000})
    assert stalled_run(t, gw, T0 + 2_200, T0 + 30_000) == []
    t.on_probe(T0 + 29_000, T0 + 30_100)  # late: the stall ends, the windows start again
    verdicts = [v for now in range(T0 + 30_200, T0 + 34_000, 200) for v in tick(t, now)]
    [event] = offline(verdicts)
    assert (event.reason, event.since) == ("gateway_lost", T0 + 2_000)
    assert event.ts >= T0 + 30_100 + 3_000


def test_a_gateway_is_lost_only_when_a_probe_sent_after_its_deadline_comes_back() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    run(t, gw, T0, T0 + 2_000, {"a1": 1_000})
    # Probes keep coming back promptly up to the deadline (T0 + 5 s) but not past it.
    for now in range(T0 + 2_200, T0 + 5_000, 200):
        assert tick(t, now) == []
    assert t.tick(T0 + 5_200) == []
    t.on_probe(T0 + 5_100, T0 + 5_300)
    [event] = offline(t.tick(T0 + 5_300))
    assert event.reason == "gateway_lost"


def test_silence_is_not_a_heartbeat_timeout_while_the_probes_are_late() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    gw.beat(T0 + 1_000, a1=T0 + 1_000)
    # The gateway's batches still arrive, without a1, but the notifier's probes do not:
    # the notifier cannot tell whether a1's beats are stuck with its own records.
    for now in range(T0 + 1_200, T0 + 8_000, 200):
        if now % 1_000 == 0:
            gw.beat(now)
        assert events(t.tick(now)) == []
    # Once the log is known to flow, the deadline counts again from then.
    t.on_probe(T0 + 8_000, T0 + 8_010)
    assert events(t.tick(T0 + 8_010)) == []
    gw.beat(T0 + 10_500)
    [event] = offline(tick(t, T0 + 10_500))
    assert event.reason == "heartbeat_timeout"


# -- restarts, flapping --------------------------------------------------------------------


def test_restart_reissues_a_recent_offline_verdict_whose_event_may_be_lost() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0 + 10)
    gw.connect("a2", "c2", T0 + 10)
    verdicts = tick(t, T0 + 20)
    gw.disconnect("a1", "c1", T0 + 1_000, "client_closed")
    [first] = offline(tick(t, T0 + 1_010))
    off = tick(t, T0 + 1_020)
    verdicts += [v for v in [*off] if v.event is None]
    # Crash after the presence verdict, before the log event: presence says offline.
    restarted = replay(
        gw.presence + written(verdicts) + [(liveness_key("a1"), t.verdict("a1"), T0 + 1_010)]
    )
    restarted.start(T0 + 5_000)
    [again] = tick(restarted, T0 + 5_000)
    assert again.reissued and again.event is not None and again.event.id == first.id
    # Only once, and never for the student still connected.
    assert tick(restarted, T0 + 5_200) == []


def test_an_offline_verdict_on_a_kept_connection_is_undone_by_its_next_beat() -> None:
    t, gw = started()
    gw.connect("a1", "c1", T0, interval_s=1.0)
    run(t, gw, T0, T0 + 2_000, {"a1": 1_000})
    # The notifier restarts believing a1 offline although its socket never closed.
    wrong = AttemptLiveness(
        exam="e1",
        attempt="a1",
        student="s-a1",
        online=False,
        since=T0 + 2_000,
        reason="gateway_lost",
        slot=0,
    )
    restarted = replay([*gw.presence, (liveness_key("a1"), wrong, T0 + 2_100)])
    restarted_gw = Gateway(restarted)
    restarted.start(T0 + 3_000)
    assert [v.reissued for v in tick(restarted, T0 + 3_000)] == []  # connected: not re-issued
    restarted_gw.beat(T0 + 3_500, a1=T0 + 3_400)
    [back] = events(tick(restarted, T0 + 3_500))
    assert isinstance(back, StudentBackOnline) and back.attempt == "a1"


def test_a_reconnect_loop_is_one_incident() -> None:
    t, gw = started()
    gw.connect("a1", "c0", T0 + 10)
    tick(t, T0 + 20)
    out: list[Verdict] = []
    for i in range(1, 40):
        at = T0 + i * 500
        gw.disconnect("a1", f"c{i - 1}", at, "client_closed")
        out += tick(t, at + 10)
        gw.connect("a1", f"c{i}", at + 100)
        out += tick(t, at + 110)
    kinds = [type(e).__name__ for e in events(out)]
    assert kinds == ["StudentOffline", "StudentBackOnline"]
    # Still connected at the end: after the loop stops, a real close is offline again.
    gw.disconnect("a1", "c39", T0 + 80_000, "client_closed")
    [event] = offline(tick(t, T0 + 80_010))
    assert event.since == T0 + 80_000
