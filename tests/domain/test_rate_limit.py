"""TokenBucket: bursts up to ``burst``, then ``rate`` per second, on a clock the caller passes."""

from __future__ import annotations

import pytest

from domain.rate_limit import TokenBucket

START = 1000.0  # a monotonic clock rarely starts at zero


def takes(bucket: TokenBucket, now: float, count: int) -> list[bool]:
    return [bucket.take(now) for _ in range(count)]


def test_a_full_burst_is_allowed_then_the_next_frame_is_refused() -> None:
    bucket = TokenBucket(rate=2.0, burst=5.0)

    assert takes(bucket, START, 5) == [True] * 5
    assert bucket.take(START) is False


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=5.0)
    takes(bucket, START, 5)

    assert bucket.take(START + 0.25) is False  # half a token
    assert bucket.take(START + 0.5) is True  # one token after 0.5 s at 2/s
    assert bucket.take(START + 0.5) is False


def test_a_long_pause_refills_only_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0)
    takes(bucket, START, 3)

    assert takes(bucket, START + 3600, 4) == [True, True, True, False]


def test_sustained_traffic_at_the_rate_is_never_refused() -> None:
    # A burst of 2 leaves room for float rounding of the interval (0.2 s * 5/s < 1.0).
    bucket = TokenBucket(rate=5.0, burst=2.0)

    assert all(bucket.take(START + i * 0.2) for i in range(1000))


def test_traffic_above_the_rate_is_held_to_the_rate() -> None:
    bucket = TokenBucket(rate=5.0, burst=5.0)
    # 50 frames per second for 10 seconds: 5 burst + 5 per second get through.
    allowed = sum(bucket.take(START + i * 0.02) for i in range(500))

    assert allowed == pytest.approx(5 + 5 * 10, abs=1)


def test_a_refused_frame_costs_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    bucket.take(START)
    takes(bucket, START + 0.5, 10)  # all refused; must not push the next token further away

    assert bucket.take(START + 1.0) is True


def test_retry_after_is_the_time_to_the_next_token() -> None:
    bucket = TokenBucket(rate=4.0, burst=2.0)
    takes(bucket, START, 2)

    assert bucket.take(START) is False
    assert bucket.retry_after() == pytest.approx(0.25)
    bucket.take(START + 0.1)
    assert bucket.retry_after() == pytest.approx(0.15)


def test_retry_after_is_zero_while_tokens_remain() -> None:
    bucket = TokenBucket(rate=1.0, burst=3.0)
    bucket.take(START)

    assert bucket.retry_after() == 0.0


def test_waiting_retry_after_is_enough() -> None:
    bucket = TokenBucket(rate=3.0, burst=1.0)
    bucket.take(START)
    bucket.take(START)

    assert bucket.take(START + bucket.retry_after() + 1e-9) is True


def test_buckets_are_independent() -> None:
    flooder, neighbour = TokenBucket(rate=1.0, burst=2.0), TokenBucket(rate=1.0, burst=2.0)
    takes(flooder, START, 100)

    assert neighbour.take(START) is True


def test_take_up_to_spends_whole_tokens_and_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=50.0, updated=START)

    assert bucket.take_up_to(80, START) == 50  # the burst, not more
    assert bucket.take_up_to(80, START + 0.1) == 10
    assert bucket.take_up_to(3, START + 1.0) == 3  # fewer wanted than available
    assert bucket.take_up_to(0, START + 1.0) == 0
