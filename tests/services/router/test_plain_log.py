"""The plain engine as the group reader's handler, without a broker (test_router.py runs the
whole router on both engines against the real Kafka)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from adapters.group_reader import Batch, _Listener
from domain.offsets import OffsetLedger
from services.router.engine import RoutedBatch
from services.router.metrics import RouterMetrics
from services.router.plain_log import PlainLogEngine, _Handler
from services.router.settings import RouterOptions, RouterSettings

TOPIC = "log"


class Routing:
    def __init__(self, *, assign_fails: bool = False) -> None:
        self.revoked: list[list[int]] = []
        self.kept: list[list[int]] = []
        self.failures: list[BaseException] = []
        self._assign_fails = assign_fails

    async def route_records(
        self, records: Sequence[Any], keep: Callable[[int], bool]
    ) -> RoutedBatch:
        self.kept.append([r.partition for r in records if keep(r.partition)])
        return RoutedBatch([], {}, 0.0, [(records[0], "no exam")])

    async def await_deliveries(self, pending: list[Awaitable[Any]]) -> None:
        pass

    async def partitions_assigned(self, partitions: list[int]) -> None:
        if self._assign_fails:
            raise RuntimeError("WatchReady did not land")

    async def partitions_revoked(self, partitions: list[int]) -> None:
        self.revoked.append(partitions)

    def batch_landed(self, batch: RoutedBatch) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        self.failures.append(exc)


def engine(routing: Routing) -> PlainLogEngine:
    settings = RouterSettings(router=RouterOptions(ops_port=0))
    settings.kafka.events_topic = TOPIC
    return PlainLogEngine(settings, routing, RouterMetrics(CollectorRegistry()).reader())


def record(partition: int, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, b"k", value, None, 1, len(value), ())


async def test_records_fetched_before_a_revocation_are_not_routed_unroutable_ones_put_aside() -> (
    None
):
    routing = Routing()
    ledger = OffsetLedger()
    ledger.assign([3, 4])
    lease = ledger.take({3: (0, 0), 4: (0, 0)})
    ledger.revoking([3])
    batch = Batch(
        [record(3, 0, b"{}"), record(4, 0, b"not json")],
        lease,
        ledger,
        topic=TOPIC,
        consumer="router",
    )
    done = await _Handler(routing).handle(batch)
    await done
    assert routing.kept == [[4]]
    assert [(letter.partition, letter.reason, letter.error) for letter in batch.letters] == [
        (3, "unroutable", "no exam")
    ]


async def test_a_failing_assignment_stops_the_router_instead_of_being_logged_away() -> None:
    routing = Routing(assign_fails=True)
    plain = engine(routing)
    with pytest.raises(RuntimeError):
        await _Listener(plain.reader).on_partitions_assigned({TopicPartition(TOPIC, 1)})
    with pytest.raises(RuntimeError, match="WatchReady did not land"):
        await plain.wait_until_stopped()
    assert [str(exc) for exc in routing.failures] == ["WatchReady did not land"]
    await plain.stop()
