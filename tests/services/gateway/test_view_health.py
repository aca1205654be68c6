"""When a gateway tells its proctors that their view is stale, and live again."""

from __future__ import annotations

from services.gateway.view_health import ViewHealth

T0 = 1_800_000_000_000


def health() -> ViewHealth:
    return ViewHealth(4, stale_after_ms=5_000)


def test_beats_for_every_partition_keep_the_view_live() -> None:
    h = health()
    for now in range(T0, T0 + 30_000, 1_000):
        h.on_beat([0, 1], now)
        h.on_beat([2, 3], now)  # a second router owns the other half
        assert h.check(now, watching=True) is None
    assert h.status is None


def test_a_partition_without_beats_is_stale_after_the_window_then_live_again() -> None:
    h = health()
    assert h.check(T0, watching=True) is None  # the window counts from the first watch
    for now in range(T0, T0 + 5_001, 1_000):
        h.on_beat([0, 1, 2], now)
        assert h.check(now, watching=True) is None
    stale = h.check(T0 + 5_001, watching=True)
    assert stale is not None and not stale.live
    assert stale.stale_partitions == [3] and stale.since == T0 + 5_001
    assert h.check(T0 + 6_000, watching=True) is None, "said once"
    assert h.status == stale
    h.on_beat([0, 1, 2, 3], T0 + 7_000)
    live = h.check(T0 + 7_000, watching=True)
    assert live is not None and live.live and live.stale_partitions == []
    assert h.status is None


def test_a_router_that_dies_makes_every_partition_stale() -> None:
    h = health()
    h.check(T0, watching=True)
    h.on_beat(range(4), T0 + 1_000)
    assert h.check(T0 + 6_000, watching=True) is None
    stale = h.check(T0 + 6_001, watching=True)
    assert stale is not None and stale.stale_partitions == [0, 1, 2, 3]
    # More partitions going stale later changes what is said, but not since when.
    h2 = health()
    h2.check(T0, watching=True)
    h2.on_beat([0, 1], T0 + 4_000)
    first = h2.check(T0 + 5_001, watching=True)
    assert first is not None and first.stale_partitions == [2, 3]
    more = h2.check(T0 + 9_001, watching=True)
    assert more is not None and more.stale_partitions == [0, 1, 2, 3] and more.since == T0 + 5_001


def test_nobody_watching_is_never_stale_and_a_new_watch_gets_a_fresh_window() -> None:
    h = health()
    assert h.check(T0 + 60_000, watching=False) is None
    assert h.check(T0 + 60_000, watching=True) is None
    assert h.check(T0 + 64_000, watching=True) is None
    stale = h.check(T0 + 65_001, watching=True)
    assert stale is not None
    assert h.check(T0 + 66_000, watching=False) is None
    assert h.status is None, "forgotten once nobody watches"
