"""Delivery accounting: what students sent against what each proctor received (pure, no I/O).

Every update a student sends (attempt, client seq, send time) that a proctor should see is
classified for that proctor:

- *seen*: a row carrying that client seq arrived; its latency is receive time minus send time
  (one machine, one clock);
- *superseded*: it never arrived but a newer state of that student did (coalescing: by design);
- *lost*: nothing at or after it ever arrived.

Receipts are taken raw, in arrival order, so the same row arriving twice (*duplicate*) or a
row older than one already shown (*out of order*) can be counted per proctor.

Besides percentiles, the JSON carries what plots need (``simulator/plot.py``): a histogram on
log-spaced buckets of every latency, and latency percentiles per second of send time.
"""

from __future__ import annotations

import math
from bisect import bisect_right
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

# Log-spaced, ten buckets per decade from 10 ms to 31.6 s, on whole milliseconds: latencies
# are whole milliseconds, so finer edges under 10 ms would leave buckets that can never fill
# (a comb, not a distribution); below 10 ms every millisecond is a bucket. The same edges for
# every run, so two runs' histograms compare bucket by bucket.
HISTOGRAM_EDGES_MS: tuple[float, ...] = (
    *(float(ms) for ms in range(1, 10)),
    *(float(round(10 ** (i / 10))) for i in range(10, 46)),
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


def histogram(
    values: Iterable[float], edges: Sequence[float] = HISTOGRAM_EDGES_MS
) -> dict[str, Any]:
    """Counts per bucket ``[edges[i], edges[i + 1])``; ``below`` and ``above`` count what
    falls outside (under the first edge, at or over the last)."""
    counts = [0] * (len(edges) - 1)
    below = above = 0
    for value in values:
        index = bisect_right(edges, value) - 1
        if index < 0:
            below += 1
        elif index >= len(counts):
            above += 1
        else:
            counts[index] += 1
    return {"edges_ms": list(edges), "counts": counts, "below": below, "above": above}


def latency_per_second(samples: Iterable[tuple[int, float]], start_ms: int) -> dict[str, Any]:
    """``samples``: (send ms, latency ms). Per whole second of send time since ``start_ms``:
    how many, p50, p99 and max (NaN for a second with none; samples before the start are
    left out)."""
    seconds: list[list[float]] = []
    for sent_ms, latency in samples:
        second = (sent_ms - start_ms) // 1000
        if second < 0:
            continue
        if second >= len(seconds):
            seconds.extend([] for _ in range(second + 1 - len(seconds)))
        seconds[second].append(latency)
    ordered = [sorted(values) for values in seconds]
    return {
        "start_ms": start_ms,
        "count": [len(values) for values in ordered],
        "p50": [percentile(values, 0.50) for values in ordered],
        "p99": [percentile(values, 0.99) for values in ordered],
        "max": [values[-1] if values else float("nan") for values in ordered],
    }


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
    sent_at_ms: list[int] = field(default_factory=list)  # send time of each latencies_ms entry
    inbound_ms: list[float] = field(default_factory=list)
    start_ms: int = 0  # second 0 of latency_per_second
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
            "latency_histogram": histogram(self.latencies_ms),
            "inbound_histogram": histogram(self.inbound_ms),
            "latency_per_second": latency_per_second(
                zip(self.sent_at_ms, self.latencies_ms, strict=True), self.start_ms
            ),
            "proctors_with_loss": sum(1 for t in self.per_proctor.values() if t.lost),
            "duplicate_examples": self.duplicate_examples,
        }


def account(
    sent: Mapping[str, Mapping[int, int]],
    receipts: Mapping[str, Sequence[Receipt]],
    watching: Mapping[str, Iterable[str]],
    *,
    start_ms: int | None = None,
) -> DeliveryReport:
    """``sent``: attempt -> {client seq: send ms}; ``receipts``: proctor -> rows in arrival
    order; ``watching``: proctor -> the attempts it should receive; ``start_ms``: second 0 of
    the per-second latencies (default: the first send)."""
    first_send = min((ms for seqs in sent.values() for ms in seqs.values()), default=0)
    report = DeliveryReport(start_ms=first_send if start_ms is None else start_ms)
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
                    report.sent_at_ms.append(sent_ms)
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
        "connect_histogram": histogram(r.ms for r in results if r.ok),
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
