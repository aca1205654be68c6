"""The Prometheus rules (deploy/prometheus/): valid for Prometheus, their unit tests pass
under promtool (Debian's, installed by scripts/bootstrap), every metric they name is one a
service really exports (so a renamed metric cannot silently disarm an alert), every recorded
series they use is recorded, and every alert links to its runbook section."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.gateway.metrics import GatewayMetrics
from services.lti.metrics import LtiMetrics
from services.notifier.metrics import NotifierMetrics
from services.router.metrics import RouterMetrics
from services.status.metrics import StatusMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = {
    "reliability-rules.yml": 7,
    "recording-rules.yml": 12,
    "service-rules.yml": 8,
}
RULE_TESTS = ["reliability-rules.test.yml", "service-rules.test.yml"]
OPERATIONS = ROOT / "docs" / "operations.md"
# Series Prometheus makes itself for every target.
SCRAPE_SERIES = {"up"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: scripts/bootstrap installs Debian's prometheus package"
    return subprocess.run(
        [binary, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*-rules.yml"))


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_every_rule_file_is_known_here() -> None:
    assert sorted(p.name for p in rule_files()) == sorted(RULE_FILES)


@pytest.mark.parametrize(("name", "count"), sorted(RULE_FILES.items()))
def test_the_rules_are_valid_prometheus_rules(name: str, count: int) -> None:
    result = promtool("check", "rules", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


@pytest.mark.parametrize("name", RULE_TESTS)
def test_each_rule_behaves_as_its_unit_tests_say(name: str) -> None:
    result = promtool("test", "rules", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_file_is_unit_tested() -> None:
    tested = {
        name
        for test in RULE_TESTS
        for name in yaml.safe_load((RULES_DIR / test).read_text())["rule_files"]
    }
    assert tested == set(RULE_FILES)


def exported_names() -> set[str]:
    names = set()
    for metrics in (GatewayMetrics, RouterMetrics, StatusMetrics, NotifierMetrics, LtiMetrics):
        registry = CollectorRegistry()  # each service has its own (process collectors)
        metrics(registry)
        for family in registry.collect():
            names.add(family.name)
            # A labelled family has no samples until a label is used: name its series by type.
            if family.type == "counter":
                names.add(f"{family.name}_total")
            if family.type == "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
            names.update(sample.name for sample in family.samples)
    return names


def named_metrics(text: str) -> set[str]:
    named = set(
        re.findall(r"\b((?:gateway|router|status|notifier|lti|process|python)_[a-z_]+)\b", text)
    )
    # Regex selectors name a family for several services: expand them.
    for services, suffix in re.findall(r'"\(([a-z|]+)\)(_[a-z_]+)"', text):
        named.update(f"{service}{suffix}" for service in services.split("|"))
    return {name for name in named if not name.endswith("_")}


def test_every_metric_the_rules_name_is_exported_by_a_service() -> None:
    exprs = "\n".join(str(rule["expr"]) for rule in rules())
    named = named_metrics(exprs)
    assert {
        "gateway_delivery_seconds_bucket",
        "status_lag_events",
        "process_open_fds",
        "lti_refusals_total",
    } <= named
    missing = sorted(named - exported_names())
    assert missing == [], f"rules name metrics no service exports: {missing}"


def test_every_recorded_series_a_rule_uses_is_recorded() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = set(
        re.findall(r"\b([a-z_]+:[a-z_]+:[a-z0-9_]+)\b", "\n".join(str(r["expr"]) for r in rules()))
    )
    assert used, "no rule uses a recorded series?"
    assert used - recorded == set()


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) == 15
    headings = re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), flags=re.MULTILINE)
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor == alert["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no section {alert['alert']}"
