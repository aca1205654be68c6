"""The gateway's id checks alone against the stack's Redis: CPU per check, client and Redis.

At S2 a gateway checks about 1,000 ids a second in batches of four or five (one batch per
2 ms window and round trip); the whole-system benchmark varies 10-15 % from run to run,
more than one hop's share, so a change to this hop is measured here, where it is the only
work: the same batches, one after another, with the client's CPU (``process_time``) and
Redis's (from /proc) over the measured claims. Needs ``infra/stack up``.

    .venv/bin/python -m simulator.claim_bench --batch 5 --claims 30000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

import uvloop
from prometheus_client import CollectorRegistry

from adapters.redis_client import redis_client
from adapters.settings import RedisSettings
from services.gateway.guards import Guards, IdClaim
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewayOptions
from simulator.resources import infra_pids, process_cpu_s
from simulator.system import ROOT

# Attempts the checks spread over: S2's 10,000 students on two gateways.
_SCOPES = 5000


@dataclass(frozen=True)
class ClaimBenchResult:
    run_id: str  # the ids' scopes start with it
    claims: int
    gateway_us_per_claim: float
    redis_us_per_claim: float
    wall_us_per_claim: float


async def run(batch: int, claims: int, redis: RedisSettings) -> ClaimBenchResult:
    redis_pid = infra_pids(ROOT / ".local" / "run")["redis"]
    client = redis_client(redis)
    # No window: batches are formed here, exactly ``batch`` claims each.
    options = GatewayOptions(claim_window_ms=0)
    guard = Guards(client, redis, options, GatewayMetrics(CollectorRegistry()))
    run_id = uuid.uuid4().hex[:8]

    async def one_batch(n: int) -> None:
        answers = await asyncio.gather(
            *(
                guard.claim_id(f"{run_id}-att-{(n * batch + i) % _SCOPES}", f"f{n}-{i}", "c" * 32)
                for i in range(batch)
            )
        )
        if set(answers) != {IdClaim.NEW}:
            raise RuntimeError(f"expected new ids only, got {set(answers)}")

    try:
        warmup = max(1, 1000 // batch)
        for n in range(warmup):
            await one_batch(n)
        batches = max(1, claims // batch)
        redis_before = process_cpu_s(redis_pid) or 0.0
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        for n in range(warmup, warmup + batches):
            await one_batch(n)
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
        redis_cpu = (process_cpu_s(redis_pid) or 0.0) - redis_before
    finally:
        await guard.close()
        # The ids would otherwise stay a day (their TTL) in the stack's Redis, in every
        # later benchmark's memory figures.
        async for key in client.scan_iter(match=f"{redis.key_prefix}ids:{{{run_id}-*", count=1000):
            await client.unlink(key)
        await client.aclose()
    done = batches * batch
    return ClaimBenchResult(
        run_id=run_id,
        claims=done,
        gateway_us_per_claim=cpu / done * 1e6,
        redis_us_per_claim=redis_cpu / done * 1e6,
        wall_us_per_claim=wall / done * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulator.claim_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=5, help="claims per batch")
    parser.add_argument("--claims", type=int, default=30_000, help="claims measured")
    args = parser.parse_args()
    result = uvloop.run(run(args.batch, args.claims, RedisSettings()))
    print(
        f"batch {args.batch}: {result.claims} claims;"
        f" gateway {result.gateway_us_per_claim:.1f} us CPU per claim,"
        f" Redis {result.redis_us_per_claim:.1f},"
        f" round trip share {result.wall_us_per_claim:.1f} us of wall time"
    )


if __name__ == "__main__":
    main()
