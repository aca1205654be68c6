"""The fetch window: idle after an empty fetch, busy above the rate, back below 3/4 of it."""

from __future__ import annotations

from domain.fetch_window import FetchWindow, Window


def _feed(
    pace: FetchWindow, per_fetch: int, every_s: float, until_s: float, start: float
) -> Window:
    now, window = start, Window.FLOWING
    while now < until_s:
        now += every_s
        window = pace.observe(per_fetch, now)
    return window


def test_an_empty_fetch_is_idle_and_records_are_flowing_below_the_rate() -> None:
    pace = FetchWindow(busy_records_per_s=1000)

    assert pace.observe(0, 0.0) is Window.IDLE
    assert _feed(pace, per_fetch=2, every_s=0.005, until_s=5.0, start=0.0) is Window.FLOWING


def test_busy_above_the_rate_and_flowing_again_only_below_three_quarters() -> None:
    pace = FetchWindow(busy_records_per_s=1000)

    assert _feed(pace, per_fetch=11, every_s=0.01, until_s=2.0, start=0.0) is Window.BUSY
    # 900/s: under the threshold but above 750/s, so it stays busy (no flapping).
    assert _feed(pace, per_fetch=9, every_s=0.01, until_s=4.0, start=2.0) is Window.BUSY
    assert _feed(pace, per_fetch=7, every_s=0.01, until_s=6.0, start=4.0) is Window.FLOWING


def test_the_rate_is_judged_over_whole_intervals_not_one_large_fetch() -> None:
    pace = FetchWindow(busy_records_per_s=1000)

    # One fetch of 1,000 records after a quiet start: not a second's worth of rate yet.
    assert pace.observe(1000, 0.0) is Window.FLOWING
    assert pace.observe(1, 0.5) is Window.FLOWING


def test_a_busy_window_stays_through_an_empty_fetch_until_the_rate_falls() -> None:
    pace = FetchWindow(busy_records_per_s=1000)
    _feed(pace, per_fetch=20, every_s=0.01, until_s=2.0, start=0.0)

    assert pace.observe(0, 2.005) is Window.IDLE  # a gap: the long poll answers the first byte
    assert pace.observe(20, 2.015) is Window.BUSY


def test_zero_never_leaves_the_flowing_window() -> None:
    pace = FetchWindow(busy_records_per_s=0)

    assert _feed(pace, per_fetch=100, every_s=0.01, until_s=3.0, start=0.0) is Window.FLOWING
