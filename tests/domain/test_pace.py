"""The fetch window: idle after an empty fetch, busy above the rate, back below 3/4 of it."""

from __future__ import annotations

from domain.pace import BusyMeter, FetchWindow, Window


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


def test_the_busy_meter_judges_whole_intervals_with_hysteresis() -> None:
    meter = BusyMeter(busy_per_s=500)

    assert not any(meter.observe(1, n / 400) for n in range(800))  # 400/s for 2 s
    assert [meter.observe(1, 2 + n / 600) for n in range(1, 1201)][-1]  # 600/s: busy
    assert [meter.observe(1, 4 + n / 450) for n in range(1, 901)][-1]  # 450/s: still busy
    assert not [meter.observe(1, 6 + n / 300) for n in range(1, 601)][-1]  # 300/s: calm
    assert not BusyMeter(busy_per_s=0).observe(10_000, 1.0)


def test_records_that_trickle_in_are_fetched_eagerly_and_a_window_opens_above_the_calm_rate() -> (
    None
):
    pace = FetchWindow(busy_records_per_s=1000, calm_records_per_s=300)

    assert pace.observe(1, 0.0) is Window.IDLE  # no whole interval yet: eager
    assert _feed(pace, per_fetch=1, every_s=0.005, until_s=2.0, start=0.0) is Window.IDLE
    assert _feed(pace, per_fetch=5, every_s=0.01, until_s=4.0, start=2.0) is Window.FLOWING
    assert _feed(pace, per_fetch=2, every_s=0.01, until_s=6.0, start=4.0) is Window.IDLE
