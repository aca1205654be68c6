"""What consumes the log for the router: one contract, two engines (``router.engine``).

``LogRouting`` is what an engine asks of the router service (route a batch under its lock,
wait for deliveries, hear of rebalances, report a failure); ``LogEngine`` is what the
service asks of an engine (start, stop, produce a delivery record, a partition's highwater).
``make_engine`` is the one place the engine setting is looked at:

- ``aiokafka`` (default, ``services.router.plain_log``): ``adapters.group_reader.GroupReader``
  with the router as its batch handler;
- ``faust`` (``services.router.faust_engine``): a Faust agent taking batches with
  ``stream.noack_take``; about 3 times the CPU per event (docs/benchmarks.md).

Both: a batch is routed under the router's lock, its delivery futures go to an acker, and
only offsets whose deliveries (and dead letters) landed are committed. A record routing
cannot read goes to the dead-letter topic (``router_dead_letters_total``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.group_reader import ReaderMetrics
from services.router.settings import RouterSettings


@dataclass(frozen=True, slots=True)
class RoutedBatch:
    """A routed batch whose delivery records may not have landed yet."""

    pending: list[Awaitable[Any]]
    last_offsets: dict[int, int]
    started: float
    # Records routing could not read: (record, why); the engine puts them aside.
    unroutable: list[tuple[Any, str]] = field(default_factory=list)


class LogRouting(Protocol):
    """What an engine asks of the router service."""

    async def route_records(
        self, records: Sequence[Any], keep: Callable[[int], bool]
    ) -> RoutedBatch: ...

    async def await_deliveries(self, pending: list[Awaitable[Any]]) -> None: ...

    async def partitions_assigned(self, partitions: list[int]) -> None: ...

    async def partitions_revoked(self, partitions: list[int]) -> None: ...

    def batch_landed(self, batch: RoutedBatch) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class LogEngine(Protocol):
    """What the router service asks of an engine."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop routing, let what is in flight land, commit it, close."""
        ...

    async def wait_until_stopped(self) -> None:
        """Return when the engine stops on its own; raise what made it fail."""
        ...

    @property
    def running(self) -> bool: ...

    async def send(self, topic: str, value: bytes, partition: int) -> Awaitable[Any]:
        """Append a delivery record; the future resolves when it landed."""
        ...

    def highwater(self, partition: int) -> int | None: ...


def make_engine(settings: RouterSettings, routing: LogRouting, metrics: ReaderMetrics) -> LogEngine:
    if settings.router.engine == "faust":
        from services.router.faust_engine import FaustEngine  # Faust is slow to import

        return FaustEngine(settings, routing, metrics)
    from services.router.plain_log import PlainLogEngine

    return PlainLogEngine(settings, routing, metrics)
