"""The collector tuning every service applies at start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from adapters.gc_tuning import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks
    gc.unfreeze()


def test_raises_the_young_threshold_and_freezes_startup_objects(restored_gc: None) -> None:
    _, gen1, gen2 = gc.get_threshold()
    tune_gc(50_000)
    assert gc.get_threshold() == (50_000, gen1, gen2)
    assert gc.get_freeze_count() > 0


def test_zero_keeps_pythons_threshold(restored_gc: None) -> None:
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before


def test_each_collection_is_timed_by_generation(restored_gc: None) -> None:
    pauses: list[tuple[int, float]] = []
    tune_gc(50_000, lambda generation, seconds: pauses.append((generation, seconds)))
    gc.collect(2)
    gc.collect(0)
    assert [generation for generation, _ in pauses[-2:]] == [2, 0]
    assert all(seconds >= 0 for _, seconds in pauses)
