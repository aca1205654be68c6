"""The pure rules for floods, publish deadlines and a stalled log, with the clock passed in."""

from __future__ import annotations

from services.gateway.limits import FloodMeter, LogHealth, PendingPublish


def test_a_fast_flood_closes_even_though_the_bucket_lets_some_frames_through() -> None:
    meter = FloodMeter(limit=500, window_s=10.0)
    # 7,200 frames/s: 360 refused between two the bucket lets through; the row never
    # reached 500, the window does.
    verdicts = [meter.dropped(n / 7200) for n in range(501)]

    assert verdicts[:500] == [False] * 500 and verdicts[500]


def test_drops_spread_over_more_than_the_window_never_close() -> None:
    meter = FloodMeter(limit=500, window_s=10.0)

    assert not any(meter.dropped(n * 0.03) for n in range(2000))  # 33 drops/s, 333 per window


def test_a_pending_publish_is_answered_once() -> None:
    pending = PendingPublish(started=1.0)

    assert pending.answer() and not pending.answer()


def test_a_stalled_log_admits_one_probe_per_interval_until_a_publish_succeeds() -> None:
    health = LogHealth(probe_every_s=5.0)
    assert health.admit(0.0) and health.admit(0.1)

    health.failed(10.0)  # a probe that blocked until its deadline counts from here

    assert [health.admit(t) for t in (10.0, 14.9, 15.0, 15.1, 19.9, 20.0)] == [
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    health.failed(21.0)
    assert not health.admit(25.9) and health.admit(26.0)
    health.succeeded()
    assert health.admit(26.1) and health.admit(26.2)
