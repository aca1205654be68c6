"""Consumer lag read at scrape time from a reader's ledger and its partitions' ends."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from adapters.consumer_lag import ConsumerLag
from domain.offsets import OffsetLedger


class Reader:
    def __init__(self, ends: dict[int, int | None]) -> None:
        self.ledger = OffsetLedger()
        self.ends = ends

    def highwater(self, partition: int) -> int | None:
        if partition not in self.ends:
            raise AssertionError("Partition is not assigned")  # what aiokafka does
        return self.ends[partition]


def lag_by_partition(registry: CollectorRegistry) -> dict[str, float]:
    return {
        sample.labels["partition"]: sample.value
        for family in registry.collect()
        if family.name == "status_lag_events"
        for sample in family.samples
    }


def test_lag_is_the_partition_end_minus_the_read_position() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag("status", registry)
    assert lag_by_partition(registry) == {}  # no reader yet: no series, no error
    reader = Reader({0: 120, 1: None})
    reader.ledger.assign([0, 1, 2])
    reader.ledger.take({0: (0, 99), 1: (0, 9), 2: (0, 4)})
    lag.follow(reader)
    # 1: no end known yet; 2: revoked meanwhile (the consumer refuses): both skipped.
    assert lag_by_partition(registry) == {"0": 20.0}
