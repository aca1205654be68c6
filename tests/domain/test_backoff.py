"""Backoff: doubling waits up to a ceiling, each from its upper half, reset after a success."""

from __future__ import annotations

from domain.backoff import Backoff


def test_waits_double_up_to_the_maximum_and_start_over_after_a_reset() -> None:
    backoff = Backoff(initial_s=0.1, maximum_s=0.5)
    ceilings = [0.1, 0.2, 0.4, 0.5, 0.5]
    for ceiling in ceilings:
        wait = backoff.next()
        assert ceiling / 2 <= wait <= ceiling
    backoff.reset()
    assert 0.05 <= backoff.next() <= 0.1
