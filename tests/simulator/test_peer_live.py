"""The seed design peer, for real: its own redis-server and ``node server.js`` with two
workers, 20 students of one exam placed 70 % across workers, a few seconds of updates.

Marked ``peer``: the peer is not part of this repository (``../shared/peers/seed-design``, or
``PROCTOR_SEED_PEER_DIR``), so the default run deselects it and ``pytest -m peer`` runs it
beside the benchmarks. It needs ``node``, ``redis-server`` (installed by ``infra/stack``) and
the peer's two npm packages, which ``ensure_deps`` installs into ``.local/peer-seed/`` in about
a second. When selected, a missing piece is a failure that names it, not a skip.
"""

from __future__ import annotations

import uuid

import pytest

from simulator.loadgen import LoadConfig
from simulator.peer_seed import ROOT, PeerServer, alive, child_pids, worker_of_ports
from simulator.side_by_side import Target, crossing_share, run_load, summarise

pytestmark = pytest.mark.peer


async def test_the_peer_delivers_every_update_to_its_proctor_across_workers() -> None:
    server = PeerServer(ROOT / ".local" / "logs" / f"seed-test-{uuid.uuid4().hex[:8]}")
    await server.start()
    try:
        assert len(server.worker_pids) == 2
        assert child_pids(server.node.pid if server.node else 0) == server.worker_pids
        target = Target(
            "seed", (server.url,), port=server.port, worker_pids=tuple(server.worker_pids)
        )
        config = LoadConfig(
            students=20,
            proctors=1,
            students_per_exam=20,
            rate_per_student=2.0,
            duration_s=3.0,
            join_window_s=1.0,
            workers=1,
            settle_s=1.0,
            drain_s=1.0,
            submit=False,
            tag="t-",
        )
        outcome = await run_load(target, config, 70)
        result = summarise(outcome, 70)
        # Every connection is gone again: only the proctor's was ever still open at the end.
        assert worker_of_ports(server.port, server.worker_pids) == {}
    finally:
        await server.stop()
    pids = server.pids().values()
    assert not any(alive(pid) for pid in pids), "the peer outlived stop()"

    assert result["misplaced_students"] == 0
    assert crossing_share(config, 70) == 0.7
    assert result["connect"]["succeeded"] == 20
    assert result["updates_sent"] >= 20 * 4
    delivery = result["delivery"]
    assert delivery["lost"] == 0
    assert delivery["deliveries_seen"] == result["updates_sent"]  # no coalescing, no acks
    assert delivery["duplicates"] == 0 and delivery["out_of_order"] == 0
    assert 0 < delivery["latency_ms"]["p50"] < 100
