"""Kafka client construction with the project's delivery guarantees baked in."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from adapters.kafka_security import client_kwargs
from adapters.settings import KafkaSettings

# The broker answers a fetch as soon as one byte is there; this only bounds how long an idle
# fetch waits, so a long wait costs no latency and saves the CPU of polling an idle topic.
_FETCH_MAX_WAIT_MS = 100


def durable_producer(
    kafka: KafkaSettings, *, client_id: str, linger_ms: int = 0
) -> AIOKafkaProducer:
    """Idempotent, acks=all: what the gateway acknowledges is really in the log, once.

    No linger: aiokafka keeps one request in flight per broker and batches whatever arrives
    meanwhile, so batching happens under load anyway; a linger only adds latency (measured
    on loopback: p50 1.1 ms at linger 0 against 4.7 ms at linger 2).
    """
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        **client_kwargs(kafka),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        request_timeout_ms=int(kafka.request_timeout_s * 1000),
        compression_type=None,
    )


def group_consumer(
    kafka: KafkaSettings,
    *topics: str,
    group_id: str,
    client_id: str,
    fetch_max_wait_ms: int = _FETCH_MAX_WAIT_MS,
    fetch_min_bytes: int = 1,
) -> AIOKafkaConsumer:
    """At-least-once consumer: offsets are committed by the caller after its writes land.

    ``fetch_min_bytes`` above 1 lets the broker hold a fetch until that much (or
    ``fetch_max_wait_ms``) has gathered: far fewer, fuller fetches for consumers off the
    latency path, at the price of up to ``fetch_max_wait_ms`` of delay when the log is quiet.
    """
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=kafka.bootstrap,
        **client_kwargs(kafka),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=2000,
        fetch_max_wait_ms=fetch_max_wait_ms,
        fetch_min_bytes=fetch_min_bytes,
        request_timeout_ms=int(kafka.request_timeout_s * 1000) + 30_000,
    )


def reader(
    kafka: KafkaSettings, *, client_id: str, fetch_max_wait_ms: int = _FETCH_MAX_WAIT_MS
) -> AIOKafkaConsumer:
    """Group-less consumer for topics read whole or by explicit partition (presence, deliveries)."""
    return AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        **client_kwargs(kafka),
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_poll_records=2000,
    )
