"""k8s/monitoring/ (prometheus-operator): the PrometheusRule carries exactly the rule groups
promtool tests, and the ServiceMonitor finds every service's pods on the port serving
/metrics, under the job names the rules and dashboards use. Offline; no cluster needed."""

from __future__ import annotations

from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from deploy import k8s_monitoring
from tests.deploy.support import K8S_BASE, K8S_DIR, Doc, yaml_documents

MONITORING_DIR = K8S_DIR / "monitoring"
JOBS = {"gateway", "router", "status", "notifier", "lti"}


def docs(kind: str) -> list[Doc]:
    return [
        doc
        for path in sorted(MONITORING_DIR.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml_documents(path)
        if doc["kind"] == kind
    ]


def workload_pods() -> dict[str, Doc]:
    """Workload name -> its pod template."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]
        for path in sorted(K8S_BASE.glob("*.yaml"))
        for doc in yaml_documents(path)
        if doc.get("kind") in {"Deployment", "StatefulSet"}
    }


def selects(selector: dict[str, str], labels: dict[str, Any]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_prometheus_rule_is_what_the_generator_makes_from_the_rule_files() -> None:
    assert k8s_monitoring.main(["--check"]) == 0
    [rule] = docs("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    expected = [
        group
        for path in sorted((k8s_monitoring.RULES_DIR).glob("*-rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == expected
    assert {g["name"] for g in expected} == {
        "proctor-recording",
        "proctor-reliability",
        "proctor-service",
    }


def test_the_kustomization_applies_every_monitoring_manifest() -> None:
    [kustomization] = yaml_documents(MONITORING_DIR / "kustomization.yaml")
    files = {p.name for p in MONITORING_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == "proctoring"


@pytest.mark.parametrize("version", ["1.31", "1.37"])
def test_the_metrics_services_are_valid_for_kubernetes(version: str) -> None:
    services = docs("Service")
    assert len(services) == len(JOBS)
    for service in services:
        kubernetes_validate.validate(service, version, strict=True)


def test_each_metrics_service_reaches_one_workloads_metrics_port_as_its_job() -> None:
    pods = workload_pods()
    jobs = set()
    for service in docs("Service"):
        [port] = service["spec"]["ports"]
        matched = [
            pod
            for pod in pods.values()
            if selects(service["spec"]["selector"], pod["metadata"]["labels"])
        ]
        assert len(matched) == 1, service["metadata"]["name"]
        [pod] = matched
        job = service["metadata"]["labels"]["app.kubernetes.io/component"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == job
        [container] = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports[port["targetPort"]] == port["port"]
        # The same port the workload's own scrape annotation names.
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port["port"])
        jobs.add(job)
    assert jobs == JOBS


def test_the_service_monitor_scrapes_exactly_the_metrics_services() -> None:
    [monitor] = docs("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    services = docs("Service")
    chosen = [
        s for s in services if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert chosen == services
    # The gateway's own Services (WebSocket entry, per-pod DNS) must not be scraped again.
    for path in sorted(K8S_BASE.glob("*.yaml")):
        for doc in yaml_documents(path):
            if doc.get("kind") == "Service":
                assert not selects(spec["selector"]["matchLabels"], doc["metadata"]["labels"])
    assert spec["namespaceSelector"]["matchNames"] == ["proctoring"]
    assert all(spec["jobLabel"] in s["metadata"]["labels"] for s in services)
    [endpoint] = spec["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert all(endpoint["port"] == s["spec"]["ports"][0]["name"] for s in services)
