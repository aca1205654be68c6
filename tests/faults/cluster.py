"""What the broker-kill fault asks of a Kafka cluster: who the active controller is, who leads
which partition, when every partition's ISR is whole again, and the topics' configs.

aiokafka has no DescribeQuorum (the admin API ``kafka-metadata-quorum`` uses); it is small, so
it is declared here from Kafka's message definition (``DescribeQuorumRequest.json``, version 0,
flexible): a broker forwards it to the active controller, whose answer names the leader of
the metadata quorum, ``__cluster_metadata``. In KRaft the ``controller_id`` of a metadata
response is only some live broker, so it cannot say which node is the controller.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

METADATA_TOPIC = "__cluster_metadata"
OFFSETS_TOPIC = "__consumer_offsets"

_REPLICA_STATE = (("replica_id", Int32), ("log_end_offset", Int64), ("tags", TaggedFields))


class DescribeQuorumResponse_v0(Response):  # type: ignore[misc]  # noqa: N801 (aiokafka's naming)
    API_KEY = 55
    API_VERSION = 0
    SCHEMA = Schema(
        ("error_code", Int16),
        (
            "topics",
            CompactArray(
                ("topic_name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("high_watermark", Int64),
                        ("current_voters", CompactArray(*_REPLICA_STATE)),
                        ("observers", CompactArray(*_REPLICA_STATE)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeQuorumRequest_v0(RequestStruct):  # type: ignore[misc]  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 55
    API_VERSION = 0
    RESPONSE_TYPE = DescribeQuorumResponse_v0
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(("partition_index", Int32), ("tags", TaggedFields)),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeQuorumRequest(Request[DescribeQuorumRequest_v0]):  # type: ignore[misc]
    API_KEY = 55

    def build(
        self, request_struct_class: type[DescribeQuorumRequest_v0]
    ) -> DescribeQuorumRequest_v0:
        return request_struct_class([(METADATA_TOPIC, [(0, {})], {})], {})


@asynccontextmanager
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@dataclass(frozen=True)
class Quorum:
    leader: int  # the active controller's node id
    epoch: int
    voters: dict[int, int]  # node id -> its end offset of the metadata log


async def describe_quorum(bootstrap: str) -> Quorum:
    async with admin(bootstrap) as client:
        response: Any = await client._send_request(DescribeQuorumRequest())
    obj = response.to_object()
    if obj["error_code"]:
        raise RuntimeError(f"DescribeQuorum: error {obj['error_code']}")
    [partition] = obj["topics"][0]["partitions"]
    if partition["error_code"]:
        raise RuntimeError(f"DescribeQuorum: partition error {partition['error_code']}")
    return Quorum(
        leader=partition["leader_id"],
        epoch=partition["leader_epoch"],
        voters={v["replica_id"]: v["log_end_offset"] for v in partition["current_voters"]},
    )


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def partitions(bootstrap: str, topics: Iterable[str]) -> list[PartitionState]:
    async with admin(bootstrap) as client:
        described = await client.describe_topics(list(topics))
    states: list[PartitionState] = []
    for topic in described:
        if topic["error_code"]:
            raise RuntimeError(f"{topic['topic']}: error {topic['error_code']}")
        for p in topic["partitions"]:
            states.append(
                PartitionState(
                    topic["topic"],
                    p["partition"],
                    p["leader"],
                    tuple(p["replicas"]),
                    tuple(p["isr"]),
                )
            )
    return states


def leaders(states: Iterable[PartitionState]) -> Counter[int]:
    """How many of these partitions each broker leads."""
    return Counter(s.leader for s in states)


def short_of_isr(states: Iterable[PartitionState]) -> list[PartitionState]:
    """Partitions whose ISR is not every replica."""
    return [s for s in states if set(s.isr) != set(s.replicas)]


async def wait_isr_full(
    bootstrap: str, topics: Iterable[str], timeout_s: float, poll_s: float = 0.25
) -> tuple[float | None, list[PartitionState]]:
    """Seconds until every partition of ``topics`` has its every replica in sync again (None
    when the bound passed), and the partitions still short at the end."""
    names = list(topics)
    started = time.monotonic()
    short: list[PartitionState] = []
    while True:
        try:
            short = short_of_isr(await partitions(bootstrap, names))
        except Exception as exc:  # a broker between states: ask again
            short = [PartitionState(f"unreadable: {type(exc).__name__}", -1, -1, (), ())]
        if not short:
            return time.monotonic() - started, []
        if time.monotonic() - started > timeout_s:
            return None, short
        await asyncio.sleep(poll_s)


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    async with admin(bootstrap) as client:
        [response] = await client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    [resource] = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
