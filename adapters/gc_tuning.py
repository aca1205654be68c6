"""Python's garbage collector, tuned for long-running asyncio services.

CPython 3.11 starts a young collection when the tracked objects allocated exceed those
freed by ``gen0_threshold``. A gateway holding 5,000 connections replaces a few dozen objects
of each connection with every frame (the reader's waiter, the message, the student's view):
about as many frees as allocations, so the count crept up slowly and every young
collection found everything replaced since the previous one still alive. With the earlier
threshold of 50,000 (raised from 700 so that short-lived objects died young) that was
50-130 ms every 5 s, the gen1 collection after ten of them walked 370,000 objects (440 ms),
and full collections walked everything (docs/benchmarks.md, "Fourth round").

With ``freeze_survivors`` whatever survives a collection is frozen at once (``gc.freeze``),
so no collection walks it again: a young collection walks only what was allocated since the
previous one, and gen1 and gen2 stay empty, so they cost nothing either. Python's own
threshold of 700 then keeps each young collection to a millisecond or two (measured at
2,000 updates/s: 1,400 collections in 3 minutes, 3 above 25 ms, all at start-up).
Short-lived cycles, such as an exception's traceback, still die young, and a frozen object
is freed by its reference count like any other. Only a reference cycle that dies after
being frozen waits: every ``sweep_interval_s`` a thread unfreezes everything, runs one full
collection and freezes what is left. Such cycles were a few tens of objects a second at
2,000 updates/s, so an hour's worth is some tens of MiB at most, and the sweep is one stop
an hour (0.5 s for a gateway holding 5,000 connections).

``gc.get_freeze_count`` walks the whole frozen list: it must not be called per collection.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

PauseObserver = Callable[[int, float], None]  # (generation, seconds)

_current: GcTuning | None = None

_SWEEP_ATTEMPTS = 5
_SWEEP_RETRY_S = 0.05


@dataclass(frozen=True, slots=True)
class GcPolicy:
    gen0_threshold: int = 700
    freeze_survivors: bool = True
    sweep_interval_s: float = 3600.0


class GcTuning:
    """What ``tune_gc`` installed: its callback and, with frozen survivors, the sweeper."""

    def __init__(self, policy: GcPolicy, observe: PauseObserver | None) -> None:
        self._policy = policy
        self._observers: list[PauseObserver] = [] if observe is None else [observe]
        self._sweeping = False
        self._swept = False
        self._sweeper_ident = 0
        self._started = 0.0
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def install(self) -> None:
        gc.collect()
        gc.freeze()
        if self._policy.gen0_threshold > 0:
            _, gen1, gen2 = gc.get_threshold()
            gc.set_threshold(self._policy.gen0_threshold, gen1, gen2)
        gc.callbacks.append(self._on_gc)
        if self._policy.freeze_survivors and self._policy.sweep_interval_s > 0:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="gc-sweep", daemon=True)
            self._sweeper.start()

    @property
    def observers(self) -> tuple[PauseObserver, ...]:
        return tuple(self._observers)

    def add_observer(self, observe: PauseObserver) -> None:
        self._observers.append(observe)

    def close(self) -> None:
        global _current
        if _current is self:
            _current = None
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def sweep(self) -> int:
        """Unfreeze, collect everything, freeze the rest; the number of objects collected.

        ``gc.collect`` does nothing and returns 0 while another thread is inside a collection
        (its callbacks and finalizers run Python code, which can hand this thread the GIL),
        so the sweep checks that its own full collection started, and tries again if not.
        """
        started = time.perf_counter()
        for attempt in range(1, _SWEEP_ATTEMPTS + 1):
            self._sweeper_ident = threading.get_ident()
            self._swept = False
            self._sweeping = True
            try:
                gc.unfreeze()
                collected = gc.collect()
                gc.freeze()
            finally:
                self._sweeping = False
            if self._swept:
                log.info(
                    "gc_swept",
                    collected=collected,
                    attempts=attempt,
                    pause_ms=round((time.perf_counter() - started) * 1000),
                )
                return collected
            time.sleep(_SWEEP_RETRY_S)
        log.warning("gc_sweep_skipped", attempts=_SWEEP_ATTEMPTS)
        return 0

    def _sweep_loop(self) -> None:
        # A thread of its own, asleep but for the sweep: scheduling it on the event loop would
        # need every service (and tool) to do so. It holds the GIL only while sweeping. The
        # jitter keeps gateways started together from stopping all at once.
        interval = self._policy.sweep_interval_s
        while not self._stop.wait(interval * random.uniform(0.75, 1.25)):
            try:
                self.sweep()
            except Exception:
                # A failed sweep must not end the sweeps: the next one comes on time.
                log.exception("gc_sweep_failed")

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            if info["generation"] == 2 and threading.get_ident() == self._sweeper_ident:
                self._swept = True
            return
        if self._policy.freeze_survivors and not self._sweeping:
            # Survivors are in gen1 or gen2 now: out of every later collection.
            gc.freeze()
        if self._observers:
            seconds = time.perf_counter() - self._started
            for observe in self._observers:
                observe(info["generation"], seconds)


def observe_pauses(observe: PauseObserver) -> None:
    """Also report every collection's pause to ``observe``, if this process tuned its
    collector (services do at start, before they build their metrics; tests need not)."""
    if _current is not None:
        _current.add_observer(observe)


def tune_gc(gen0_threshold: int | GcPolicy, observe: PauseObserver | None = None) -> GcTuning:
    """Freeze what exists now and raise the gen0 threshold (0 keeps Python's default); with
    a ``GcPolicy`` that freezes survivors, also freeze every collection's survivors."""
    policy = (
        gen0_threshold
        if isinstance(gen0_threshold, GcPolicy)
        else GcPolicy(gen0_threshold=gen0_threshold, freeze_survivors=False)
    )
    global _current
    previous, tuning = _current, GcTuning(policy, observe)
    if previous is not None:
        # One tuning per process: tuning again (a test, a tool) replaces the previous one and
        # keeps reporting to whoever observed it.
        for kept in previous.observers:
            tuning.add_observer(kept)
        previous.close()
    tuning.install()
    _current = tuning
    return tuning
