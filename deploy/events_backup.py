"""Back up the events topic to a file, and restore it, offsets and all.

The events topic is the audit record, and an attempt's ``seq`` is the Kafka offset of its
event: every view and every export names events by offset. So a restore must give every record
its original offset, which a fresh topic does when each partition is written in order from
offset 0 with no gaps (the log is written by idempotent producers without transactions and
never compacted, so it has none). ``restore`` checks each offset Kafka assigns against the
backup's and stops at the first difference.

    python -m deploy.events_backup dump --out events-2026-11-29.jsonl.gz
    python -m deploy.events_backup restore --file events-2026-11-29.jsonl.gz [--topic NAME]

The file is gzipped JSON lines: a header (topic, partitions, each partition's first and end
offset), then one line per record (partition, offset, timestamp, key, value and headers in
base64). Settings (bootstrap, topic names) are the services' ``PROCTOR_KAFKA__*``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from adapters.kafka_clients import durable_producer, reader
from adapters.kafka_topics import ensure_topics, partition_count
from adapters.settings import CommonSettings, KafkaSettings

FORMAT = "proctor-events-backup/1"
_CHUNK = 2000


class RestoreRefused(Exception):
    """The target is not a place the backup can be restored to with its offsets."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


async def dump(kafka: KafkaSettings, out: Path, topic: str | None = None) -> dict[str, Any]:
    """Write every record of the topic, up to its end when the dump starts; the header."""
    topic = topic or kafka.events_topic
    partitions = await partition_count(kafka, topic)
    if partitions == 0:
        raise RestoreRefused(f"topic {topic} does not exist at {kafka.bootstrap}")
    consumer = reader(kafka, client_id="events-backup")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        header = {
            "format": FORMAT,
            "topic": topic,
            "partitions": partitions,
            "created_at_ms": int(time.time() * 1000),
            "first_offsets": [begins[tp] for tp in tps],
            "end_offsets": [ends[tp] for tp in tps],
            "records": sum(ends[tp] - begins[tp] for tp in tps),
        }
        partial = out.with_name(out.name + ".partial")
        with gzip.open(partial, "wt", encoding="utf-8") as file:
            file.write(json.dumps(header) + "\n")
            remaining = [tp for tp in tps if ends[tp] > begins[tp]]
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=_CHUNK)
                for tp, records in fetched.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            file.write(json.dumps(_line(record)) + "\n")
                remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
        # Renamed only when complete: a file named like the backup is a whole backup.
        partial.replace(out)
        return header
    finally:
        await consumer.stop()


def _line(record: Any) -> dict[str, Any]:
    return {
        "p": record.partition,
        "o": record.offset,
        "t": record.timestamp,
        "k": _b64(record.key),
        "v": _b64(record.value),
        "h": [[name, _b64(value)] for name, value in record.headers or ()],
    }


def read_backup(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    file = gzip.open(path, "rt", encoding="utf-8")
    header = json.loads(file.readline())
    if header.get("format") != FORMAT:
        file.close()
        raise RestoreRefused(f"{path}: not a {FORMAT} file")

    def records() -> Iterator[dict[str, Any]]:
        with file:
            for line in file:
                yield json.loads(line)

    return header, records()


async def restore(kafka: KafkaSettings, path: Path, topic: str | None = None) -> int:
    """Write the backup into ``topic`` (default: the events topic), which must be new or
    empty with the backup's partition count; every record lands at its original offset."""
    header, records = read_backup(path)
    topic = topic or kafka.events_topic
    partitions = header["partitions"]
    if any(first != 0 for first in header["first_offsets"]):
        raise RestoreRefused(
            "the backup does not start at offset 0 (retention deleted the beginning):"
            " a fresh topic would give its records other offsets"
        )
    await ensure_topics(
        kafka.model_copy(update={"events_topic": topic, "events_partitions": partitions})
    )
    existing = await _settled_partition_count(kafka, topic, partitions)
    if existing != partitions:
        raise RestoreRefused(f"{topic} has {existing} partitions, the backup {partitions}")
    await _require_empty(kafka, topic, partitions)
    producer = durable_producer(kafka, client_id="events-restore")
    await producer.start()
    written = 0
    try:
        pending: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        for record in records:
            future = await producer.send(
                topic,
                value=_unb64(record["v"]),
                key=_unb64(record["k"]),
                partition=record["p"],
                timestamp_ms=record["t"],
                headers=[(name, _unb64(value) or b"") for name, value in record["h"]] or None,
            )
            pending.append((record, future))
            if len(pending) >= _CHUNK:
                written += await _check_offsets(pending)
                pending = []
        written += await _check_offsets(pending)
    finally:
        await producer.stop()
    if written != header["records"]:
        raise RestoreRefused(
            f"wrote {written} records, the backup's header says {header['records']}"
        )
    return written


async def _settled_partition_count(
    kafka: KafkaSettings, topic: str, expected: int, *, within_s: float = 10.0
) -> int:
    """The topic's partition count once the broker's metadata shows it: a topic created a
    moment ago can describe as missing (0 partitions) for a little while."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        count = await partition_count(kafka, topic)
        if count == expected or count > 0 or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.2)


async def _require_empty(kafka: KafkaSettings, topic: str, partitions: int) -> None:
    consumer = reader(kafka, client_id="events-restore-check")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    if any(ends.values()):
        raise RestoreRefused(f"{topic} is not empty: restore only into a new or empty topic")


async def _check_offsets(pending: list[tuple[dict[str, Any], asyncio.Future[Any]]]) -> int:
    for record, future in pending:
        metadata = await future
        if metadata.offset != record["o"]:
            raise RestoreRefused(
                f"partition {record['p']}: record {record['o']} landed at offset"
                f" {metadata.offset}; the restore is not faithful, stop and investigate"
            )
    return len(pending)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    commands = parser.add_subparsers(dest="command", required=True)
    dump_cmd = commands.add_parser("dump", help="write the events topic to a file")
    dump_cmd.add_argument("--out", type=Path, required=True)
    dump_cmd.add_argument("--topic", help="default: the events topic of the settings")
    restore_cmd = commands.add_parser("restore", help="write a backup into a new or empty topic")
    restore_cmd.add_argument("--file", type=Path, required=True)
    restore_cmd.add_argument("--topic", help="default: the events topic of the settings")
    args = parser.parse_args(argv)
    kafka = CommonSettings().kafka
    try:
        if args.command == "dump":
            header = asyncio.run(dump(kafka, args.out, args.topic))
            print(f"{args.out}: {header['records']} records of {header['topic']}")
        else:
            written = asyncio.run(restore(kafka, args.file, args.topic))
            print(f"restored {written} records at their original offsets")
    except RestoreRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
