"""Delivery accounting: what students sent against what each proctor received (pure, no I/O).

Every update a student sends (attempt, client seq, send time) that a proctor should see is
classified for that proctor:

- *seen*: a row carrying that client seq arrived; its latency is receive time minus send time
  (one machine, one clock);
- *superseded*: it never arrived but a newer state of that student did (coalescing: by design);
- *lost*: nothing at or after it ever arrived.

Receipts are taken raw, in arrival order, so the same row arriving twice (*duplicate*) or a
row older than one already shown (*out of order*) can be counted per proctor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """One live row a proctor received."""

    attempt: str
    seq: int  # the server's per-attempt seq of the row
    client_seq: int  # the newest student seq folded into the row
    at_ms: int
    written_ms: int = 0  # when the student's gateway stamped the event


@dataclass(frozen=True, slots=True)
class ConnectResult:
    ok: bool
    ms: float
    error: str = ""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank on an already sorted sequence; NaN when empty."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def summary(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    out = {name: percentile(ordered, q) for name, q in QUANTILES}
    out["min"] = ordered[0] if ordered else float("nan")
    out["max"] = ordered[-1] if ordered else float("nan")
    out["mean"] = sum(ordered) / len(ordered) if ordered else float("nan")
    return out


@dataclass(slots=True)
class ProctorTally:
    seen: int = 0
    superseded: int = 0
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    final_state_missing: int = 0  # attempts whose last update never showed (lost or stale)


@dataclass
class DeliveryReport:
    latencies_ms: list[float] = field(default_factory=list)
    inbound_ms: list[float] = field(default_factory=list)
    per_proctor: dict[str, ProctorTally] = field(default_factory=dict)
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(t, name)) for t in self.per_proctor.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "deliveries_seen": self.total("seen"),
            "superseded_by_newer_state": self.total("superseded"),
            "lost": self.total("lost"),
            "duplicates": self.total("duplicates"),
            "out_of_order": self.total("out_of_order"),
            "final_state_missing": self.total("final_state_missing"),
            "latency_ms": summary(self.latencies_ms),
            "inbound_ms": summary(self.inbound_ms),
            "proctors_with_loss": sum(1 for t in self.per_proctor.values() if t.lost),
            "duplicate_examples": self.duplicate_examples,
        }


def account(
    sent: Mapping[str, Mapping[int, int]],
    receipts: Mapping[str, Sequence[Receipt]],
    watching: Mapping[str, Iterable[str]],
) -> DeliveryReport:
    """``sent``: attempt -> {client seq: send ms}; ``receipts``: proctor -> rows in arrival
    order; ``watching``: proctor -> the attempts it should receive."""
    report = DeliveryReport()
    for proctor, attempts in watching.items():
        tally = ProctorTally()
        arrived: dict[str, dict[int, Receipt]] = {}
        newest_seq: dict[str, int] = {}
        for got in receipts.get(proctor, ()):
            shown = newest_seq.get(got.attempt, -1)  # a first row may carry seq 0
            if got.seq == shown:
                tally.duplicates += 1
                if len(report.duplicate_examples) < 10:
                    report.duplicate_examples.append({"proctor": proctor, **asdict(got)})
                continue
            if got.seq < shown:
                tally.out_of_order += 1
                continue
            newest_seq[got.attempt] = got.seq
            arrived.setdefault(got.attempt, {}).setdefault(got.client_seq, got)
        for attempt in attempts:
            mine = arrived.get(attempt, {})
            newest = max(mine, default=0)
            updates = sent.get(attempt, {})
            for client_seq, sent_ms in updates.items():
                row = mine.get(client_seq)
                if row is not None:
                    tally.seen += 1
                    report.latencies_ms.append(row.at_ms - sent_ms)
                    if row.written_ms:
                        report.inbound_ms.append(row.written_ms - sent_ms)
                elif client_seq < newest:
                    tally.superseded += 1
                else:
                    tally.lost += 1
            if updates and newest < max(updates):
                tally.final_state_missing += 1
        report.per_proctor[proctor] = tally
    return report


def connect_summary(results: Sequence[ConnectResult]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for result in results:
        if not result.ok:
            errors[result.error] = errors.get(result.error, 0) + 1
    return {
        "attempted": len(results),
        "succeeded": sum(1 for r in results if r.ok),
        "failed": sum(1 for r in results if not r.ok),
        "errors": errors,
        "connect_ms": summary(r.ms for r in results if r.ok),
    }


def per_second(times_ms: Iterable[int], start_ms: int) -> list[int]:
    """Counts per whole second since ``start_ms`` (throughput over time)."""
    counts: list[int] = []
    for at in times_ms:
        bucket = (at - start_ms) // 1000
        if bucket < 0:
            continue
        if bucket >= len(counts):
            counts.extend([0] * (bucket + 1 - len(counts)))
        counts[bucket] += 1
    return counts


def json_safe(value: Any) -> Any:
    """NaN is not JSON: empty percentiles become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
