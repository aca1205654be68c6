"""The reliability alert rules (deploy/prometheus/): valid for Prometheus, their unit tests
pass under promtool (Debian's, installed by scripts/bootstrap), and every metric they name is
one a service really exports, so a renamed metric cannot silently disarm an alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.gateway.metrics import GatewayMetrics
from services.notifier.metrics import NotifierMetrics
from services.router.metrics import RouterMetrics
from services.status.metrics import StatusMetrics

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "reliability-rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: scripts/bootstrap installs Debian's prometheus package"
    return subprocess.run(
        [binary, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_are_valid_prometheus_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_each_alert_fires_and_resolves_as_its_unit_tests_say() -> None:
    result = promtool("test", "rules", "reliability-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    for metrics in (GatewayMetrics, RouterMetrics, StatusMetrics, NotifierMetrics):
        metrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        # A labelled family has no samples until a label is used: name its series by type.
        if family.type == "counter":
            names.add(f"{family.name}_total")
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_rules_name_is_exported_by_a_service() -> None:
    text = RULES.read_text()
    named = set(re.findall(r"\b((?:gateway|router|status|notifier)_[a-z_]+)\b", text))
    # Regex selectors name a family for several services: expand them.
    for services, suffix in re.findall(r'"\(([a-z|]+)\)(_[a-z_]+)"', text):
        named.update(f"{service}{suffix}" for service in services.split("|"))
    named = {name for name in named if not name.endswith("_")}
    assert named, "the rules name no metric?"
    missing = sorted(named - exported_names())
    assert missing == [], f"rules name metrics no service exports: {missing}"
