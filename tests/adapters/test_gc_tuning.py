"""The collector tuning every service applies at start-up."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from adapters import gc_tuning
from adapters.gc_tuning import GcPolicy, GcTuning, tune_gc
from adapters.runtime_metrics import add_runtime_collectors
from adapters.settings import CommonSettings


class Node:
    """A GC-tracked object that can sit in a reference cycle and be watched by weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restored_gc() -> Iterator[list[GcTuning]]:
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    installed: list[GcTuning] = []
    yield installed
    for tuning in installed:
        tuning.close()
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks
    gc.unfreeze()


def test_raises_the_young_threshold_and_freezes_startup_objects(
    restored_gc: list[GcTuning],
) -> None:
    _, gen1, gen2 = gc.get_threshold()
    restored_gc.append(tune_gc(50_000))
    assert gc.get_threshold() == (50_000, gen1, gen2)
    assert gc.get_freeze_count() > 0


def test_zero_keeps_pythons_threshold(restored_gc: list[GcTuning]) -> None:
    before = gc.get_threshold()
    restored_gc.append(tune_gc(0))
    assert gc.get_threshold() == before


def test_each_collection_is_timed_by_generation(restored_gc: list[GcTuning]) -> None:
    pauses: list[tuple[int, float]] = []
    restored_gc.append(
        tune_gc(50_000, lambda generation, seconds: pauses.append((generation, seconds)))
    )
    gc.collect(2)
    gc.collect(0)
    assert [generation for generation, _ in pauses[-2:]] == [2, 0]


def _dead_cycle(*, frozen: bool) -> weakref.ref[Node]:
    """A reference cycle nothing else holds once this returns; ``frozen``: collected (and so
    frozen) while still alive, as a cycle that outlived a young collection."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    if frozen:
        gc.collect(0)
    return weakref.ref(a)


def _tracked(obj: object) -> bool:
    return any(o is obj for generation in range(3) for o in gc.get_objects(generation))


def test_survivors_of_a_collection_are_frozen_out_of_later_ones(
    restored_gc: list[GcTuning],
) -> None:
    restored_gc.append(tune_gc(GcPolicy(gen0_threshold=50_000, sweep_interval_s=0)))
    survivor = Node()
    assert _tracked(survivor)
    gc.collect(0)
    # No generation holds it now: no collection walks it again.
    assert not _tracked(survivor)


def test_young_cycles_still_die_young(restored_gc: list[GcTuning]) -> None:
    restored_gc.append(tune_gc(GcPolicy(gen0_threshold=50_000, sweep_interval_s=0)))
    watch = _dead_cycle(frozen=False)
    gc.collect(0)
    assert watch() is None


def test_a_cycle_that_died_frozen_waits_for_the_sweep(restored_gc: list[GcTuning]) -> None:
    tuning = tune_gc(GcPolicy(gen0_threshold=50_000, sweep_interval_s=0))
    restored_gc.append(tuning)
    watch = _dead_cycle(frozen=True)
    gc.collect()
    assert watch() is not None, "a frozen cycle is out of every collection"
    survivor = Node()
    assert tuning.sweep() >= 2
    assert watch() is None
    # The sweep froze what was left: the next young collection walks only new objects.
    assert not _tracked(survivor)


def test_a_sweep_that_met_another_collection_tries_again(
    restored_gc: list[GcTuning], monkeypatch: pytest.MonkeyPatch
) -> None:
    tuning = tune_gc(GcPolicy(gen0_threshold=50_000, sweep_interval_s=0))
    restored_gc.append(tuning)
    watch = _dead_cycle(frozen=True)
    real_collect = gc.collect
    calls: list[int] = []

    def busy_once(generation: int = 2) -> int:
        # The first sweep lands while another thread is collecting: gc.collect does nothing.
        calls.append(generation)
        return 0 if len(calls) == 1 else real_collect(generation)

    monkeypatch.setattr(gc, "collect", busy_once)
    assert tuning.sweep() >= 2
    assert len(calls) == 2
    assert watch() is None


def test_a_frozen_object_is_still_freed_by_its_reference_count(
    restored_gc: list[GcTuning],
) -> None:
    restored_gc.append(tune_gc(GcPolicy(gen0_threshold=50_000, sweep_interval_s=0)))
    node = Node()
    watch = weakref.ref(node)
    gc.collect(0)
    del node
    assert watch() is None


def test_the_sweeper_thread_sweeps_on_its_interval(restored_gc: list[GcTuning]) -> None:
    tuning = tune_gc(GcPolicy(gen0_threshold=50_000, sweep_interval_s=0.05))
    restored_gc.append(tuning)
    watch = _dead_cycle(frozen=True)
    for _ in range(200):
        if watch() is None:
            break
        gc.collect(0)
        threading.Event().wait(0.01)
    assert watch() is None


def test_settings_make_the_policy() -> None:
    settings = CommonSettings(
        gc_gen0_threshold=700, gc_freeze_survivors=False, gc_sweep_interval_s=60
    )
    assert settings.gc_policy() == GcPolicy(
        gen0_threshold=700, freeze_survivors=False, sweep_interval_s=60
    )
    assert CommonSettings().gc_policy().freeze_survivors


def test_tuning_again_replaces_the_previous_tuning(restored_gc: list[GcTuning]) -> None:
    first = tune_gc(GcPolicy(sweep_interval_s=0))
    second = tune_gc(GcPolicy(sweep_interval_s=0))
    restored_gc.extend([first, second])
    callbacks = [cb for cb in gc.callbacks if getattr(cb, "__self__", None) in (first, second)]
    assert callbacks == [second._on_gc]


def test_service_metrics_observe_every_collection_once_tuned(
    restored_gc: list[GcTuning],
) -> None:
    restored_gc.append(tune_gc(GcPolicy(sweep_interval_s=0)))
    registry = CollectorRegistry()
    add_runtime_collectors(registry, "svc")
    gc.collect(0)
    gc.collect(2)
    for generation in ("0", "2"):
        count = registry.get_sample_value("svc_gc_pause_seconds_count", {"generation": generation})
        assert count is not None and count >= 1


def test_without_tuning_the_pause_metric_stays_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_tuning, "_current", None)
    registry = CollectorRegistry()
    add_runtime_collectors(registry, "svc")
    gc.collect(0)
    assert registry.get_sample_value("svc_gc_pause_seconds_count", {"generation": "0"}) == 0


def test_tuning_again_keeps_the_observers(restored_gc: list[GcTuning]) -> None:
    pauses: list[int] = []
    restored_gc.append(tune_gc(GcPolicy(sweep_interval_s=0), lambda g, _: pauses.append(g)))
    restored_gc.append(tune_gc(GcPolicy(sweep_interval_s=0)))
    gc.collect(0)
    assert pauses[-1:] == [0]


def test_the_sweep_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="gc_sweep_interval_s"):
        CommonSettings(gc_sweep_interval_s=0)
