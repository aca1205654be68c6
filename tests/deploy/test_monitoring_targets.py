"""The scrape target files the demo writes for infra/monitoring's Prometheus (file_sd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy import monitoring
from simulator.launcher import free_port


def test_one_file_per_job_with_the_run_and_slot_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROCTOR_LOCAL_DIR", str(tmp_path))
    ports = {
        "gateway-0": 8080,
        "gateway-1": 8081,
        "router": 40001,
        "status": 40002,
        "notifier": 40003,
        "lti": 40004,
    }
    written = monitoring.write_targets(ports, "demo-1")
    base = tmp_path / "conf" / "prometheus" / "targets"
    assert sorted(written) == sorted(base / job / "demo-1.json" for job in monitoring.JOBS)
    gateway = json.loads((base / "gateway" / "demo-1.json").read_text())
    assert gateway == [
        {"targets": ["127.0.0.1:8080"], "labels": {"run": "demo-1", "slot": "0"}},
        {"targets": ["127.0.0.1:8081"], "labels": {"run": "demo-1", "slot": "1"}},
    ]
    router = json.loads((base / "router" / "demo-1.json").read_text())
    assert router == [{"targets": ["127.0.0.1:40001"], "labels": {"run": "demo-1"}}]
    assert not list(base.rglob("*.tmp"))

    monitoring.write_targets({"router": 40009}, "demo-2")
    monitoring.remove_targets("demo-1")
    assert [p.relative_to(base) for p in base.rglob("*.json")] == [Path("router/demo-2.json")]


def test_a_service_prometheus_does_not_know_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROCTOR_LOCAL_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="kafka"):
        monitoring.write_targets({"kafka": 19092}, "demo")


def test_no_prometheus_means_nothing_to_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCTOR_PROMETHEUS_PORT", str(free_port()))
    assert not monitoring.prometheus_ready()
    assert monitoring.attach({"router": 1}, "demo", start=False) is None
