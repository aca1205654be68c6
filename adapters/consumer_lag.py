"""Consumer lag of a group reader, computed when Prometheus scrapes.

``<service>_lag_events{partition}``: the partition's end (the high watermark of the last
fetch) minus where reading got to, for each partition this instance owns. Reading it at scrape
time costs the hot path nothing; the router sets its own ``router_lag_events`` per batch with
the same meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.offsets import OffsetLedger


class LagSource(Protocol):
    """What a reader offers to measure its lag (``adapters.group_reader.GroupReader``)."""

    @property
    def ledger(self) -> OffsetLedger: ...

    def highwater(self, partition: int) -> int | None: ...


class ConsumerLag(Collector):
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self._name = f"{service}_lag_events"
        self._reader: LagSource | None = None
        registry.register(self)

    def follow(self, reader: LagSource) -> None:
        self._reader = reader

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self._name,
            "log events not yet read, per owned partition (partition end at the last fetch"
            " minus the reader's position)",
            labels=["partition"],
        )

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        reader = self._reader
        if reader is not None:
            for partition, position in sorted(reader.ledger.positions().items()):
                try:
                    highwater = reader.highwater(partition)
                except Exception:  # noqa: BLE001 - revoked meanwhile: no reading, not a failure
                    continue
                if highwater is not None and highwater >= 0:
                    family.add_metric([str(partition)], max(highwater - position, 0))
        yield family
