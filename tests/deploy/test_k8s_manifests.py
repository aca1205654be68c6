"""The Kubernetes base manifests in k8s/base/: valid against the API schemas, and consistent
with the services' settings, entry points and shutdown behaviour. Offline; no cluster needed.
The overlays built on them: test_k8s_overlays.py."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from adapters.settings import CommonSettings
from services.gateway.settings import GatewaySettings
from services.lti.settings import LtiSettings
from tests.deploy.support import (
    K8S_BASE,
    KUBERNETES_VERSIONS,
    PROCTOR_NAME,
    Doc,
    dockerfile_instruction,
    entry_points,
    env_names,
    listen,
    load_settings,
    public_port,
    quantity,
    service_of,
    settings_for,
    yaml_documents,
)

NAMESPACE = "proctoring"
KUSTOMIZATION = "kustomization.yaml"
SECRET_TEMPLATE = "token-secret.template.yaml"
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
# Values a container gets from elsewhere than its manifest: a Secret the operator creates.
SECRET_STAND_IN = "s" * 48
CONFIG_MAP = "proctor-config"

MANIFEST_FILES = sorted(p for p in K8S_BASE.glob("*.yaml") if p.name != KUSTOMIZATION)


def _objects() -> list[tuple[str, Doc]]:
    return [(path.name, doc) for path in MANIFEST_FILES for doc in yaml_documents(path)]


OBJECTS = _objects()
APPLIED = [(name, doc) for name, doc in OBJECTS if name != SECRET_TEMPLATE]


def _generated_config_map() -> Doc:
    """The ConfigMap kustomize generates from config.env (its name gets a content hash)."""
    (kustomization,) = yaml_documents(K8S_BASE / KUSTOMIZATION)
    (generator,) = kustomization["configMapGenerator"]
    data: dict[str, str] = {}
    for env_file in generator["envs"]:
        for line in (K8S_BASE / env_file).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                assert key and _ == "=", f"{env_file}: not KEY=value: {line!r}"
                data[key] = value
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": generator["name"],
            "namespace": kustomization["namespace"],
            "labels": generator["options"]["labels"],
        },
        "data": data,
    }


def _find(kind: str, name: str) -> Doc:
    if (kind, name) == ("ConfigMap", CONFIG_MAP):
        return _generated_config_map()
    found = [d for _, d in OBJECTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _workloads() -> list[Doc]:
    return [doc for _, doc in APPLIED if doc["kind"] in WORKLOAD_KINDS]


def _pod_specs() -> Iterator[tuple[str, Doc]]:
    for _, doc in APPLIED:
        if doc["kind"] in WORKLOAD_KINDS | {"Job"}:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _containers() -> Iterator[tuple[str, Doc]]:
    for owner, pod in _pod_specs():
        for container in pod["containers"]:
            yield f"{owner}/{container['name']}", container


def _gateway() -> Doc:
    return _find("StatefulSet", "proctor-gateway")


def _container_env(container: Doc) -> dict[str, str]:
    """The PROCTOR_ variables the container's process sees, as the manifests define them."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "only ConfigMaps are used as whole-env sources"
        env.update(_find("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            assert "secretKeyRef" in var["valueFrom"], f"{var['name']}: unexpected source"
            env[var["name"]] = SECRET_STAND_IN
    return env


def _script(container: Doc) -> str:
    return "\n".join(container.get("command", []) + container.get("args", []))


def _effective_settings(container: Doc) -> CommonSettings:
    return load_settings(settings_for(container["command"]), _container_env(container))


def _named_port(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert numbers, f"no container port named {port!r}"
    return int(numbers[0])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("file", "doc"),
    OBJECTS,
    ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in OBJECTS],
)
def test_every_manifest_is_valid_for_kubernetes(file: str, doc: Doc, version: str) -> None:
    # strict: unknown fields (typos) fail too, instead of being dropped by the API server.
    validated = kubernetes_validate.validate(doc, version, strict=True)
    assert validated == version


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_generated_config_map_is_valid_for_kubernetes(version: str) -> None:
    config = _generated_config_map()
    assert kubernetes_validate.validate(config, version, strict=True) == version
    assert all(value == value.strip() and '"' not in value for value in config["data"].values())


def test_every_workload_reads_the_generated_config_map_so_an_edit_rolls_it() -> None:
    # kustomize rewrites these references to proctor-config-<hash>: a new hash, a new pod
    # template, a rollout. A reference under any other name would never see an edit.
    for owner, container in _containers():
        refs = [source["configMapRef"]["name"] for source in container.get("envFrom", [])]
        assert refs == [CONFIG_MAP], owner
    assert not [doc for _, doc in OBJECTS if doc["kind"] == "ConfigMap"]


def test_validator_rejects_a_misspelt_field() -> None:
    broken = {**_find("ConfigMap", "proctor-config"), "datta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    (kustomization,) = yaml_documents(K8S_BASE / KUSTOMIZATION)
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in MANIFEST_FILES if p.name != SECRET_TEMPLATE)
    assert kustomization["namespace"] == NAMESPACE
    images = {image["name"] for image in kustomization["images"]}
    used = {c["image"].split(":")[0] for _, c in _containers()}
    assert used == images == {"exam-proctoring"}


def test_every_object_lives_in_the_proctoring_namespace() -> None:
    for name, doc in OBJECTS:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['kind']}"


def test_workload_containers_have_resources_and_probes() -> None:
    containers = [
        (w["metadata"]["name"], c)
        for w in _workloads()
        for c in w["spec"]["template"]["spec"]["containers"]
    ]
    assert {owner for owner, _ in containers} == {
        "proctor-gateway",
        "proctor-router",
        "proctor-status",
        "proctor-notifier",
        "proctor-lti",
    }
    for owner, container in containers:
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request = quantity(resources["requests"][resource])
            limit = quantity(resources["limits"][resource])
            assert 0 < request <= limit, f"{owner}: {resource} request {request} limit {limit}"
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            assert container[probe]["httpGet"]["path"] == path, f"{owner}: {probe}"


def test_the_init_job_has_resources_too() -> None:
    job = _find("Job", "proctor-init")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert "ensure_topics" in _script(container)
    assert "create_table=True" in _script(container)


def test_env_names_exist_in_the_settings_models() -> None:
    shared = env_names(CommonSettings)
    config = _find("ConfigMap", "proctor-config")["data"]
    # The shared map is read by every service and the init job.
    assert set(config) <= shared, sorted(set(config) - shared)
    for owner, container in _containers():
        known = env_names(settings_for(container["command"]))
        used = {var["name"] for var in container.get("env", [])}
        used |= set(PROCTOR_NAME.findall(_script(container)))
        assert used <= known, f"{owner}: not in its settings model: {sorted(used - known)}"


def test_env_name_check_catches_a_typo() -> None:
    assert "PROCTOR_GATEWAY__PORT" in env_names(GatewaySettings)
    assert "PROCTOR_GATEWAY__PROT" not in env_names(GatewaySettings)
    assert "PROCTOR_ROUTER__OPS_PORT" not in env_names(GatewaySettings)


def test_probes_scrapes_and_ports_match_where_each_service_listens() -> None:
    for workload in _workloads():
        owner = workload["metadata"]["name"]
        template = workload["spec"]["template"]
        (container,) = template["spec"]["containers"]
        settings = _effective_settings(container)
        host, port = listen(settings)
        assert host == "0.0.0.0", f"{owner} listens on {host}: unreachable for probes"
        public = public_port(settings)
        expected = [port] if public is None else [public, port]
        assert [p["containerPort"] for p in container["ports"]] == expected, owner
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert _named_port(container, container[probe]["httpGet"]["port"]) == port, owner
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", owner
        assert annotations["prometheus.io/port"] == str(port), owner
        assert annotations["prometheus.io/path"] == "/metrics", owner


def test_the_gateway_services_expose_the_websocket_but_not_the_ops_port() -> None:
    (container,) = _gateway()["spec"]["template"]["spec"]["containers"]
    settings = _effective_settings(container)
    _, ops = listen(settings)
    assert public_port(settings) is not None, "the gateway's ops routes are on its public port"
    exposed = [
        _named_port(container, port["targetPort"])
        for _, doc in APPLIED
        if doc["kind"] == "Service" and doc["metadata"]["name"].startswith("proctor-gateway")
        for port in doc["spec"]["ports"]
    ]
    assert exposed and ops not in exposed


def test_workloads_run_every_entry_point_once() -> None:
    started = [
        service_of(c["command"])
        for w in _workloads()
        for c in w["spec"]["template"]["spec"]["containers"]
    ]
    assert sorted(s for s in started if s) == sorted(entry_points())


def _run_gateway_wrapper(tmp_path: Path, hostname: str) -> subprocess.CompletedProcess[str]:
    """Run the gateway container's command with a stand-in ``proctor-gateway`` on PATH that
    prints the environment it was started with."""
    fake = tmp_path / "proctor-gateway"
    fake.write_text("#!/bin/sh\nenv\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (container,) = _gateway()["spec"]["template"]["spec"]["containers"]
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "HOSTNAME": hostname,
        **_container_env(container),
    }
    return subprocess.run(
        container["command"], env=env, capture_output=True, text=True, timeout=10, check=False
    )


@pytest.mark.parametrize(("pod", "slot"), [("proctor-gateway-0", 0), ("proctor-gateway-17", 17)])
def test_gateway_slot_is_the_pod_ordinal(tmp_path: Path, pod: str, slot: int) -> None:
    result = _run_gateway_wrapper(tmp_path, pod)
    assert result.returncode == 0, result.stderr
    seen = dict(
        line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("PROCTOR_")
    )
    settings = load_settings(GatewaySettings, seen)
    assert settings.gateway.slot == slot


@pytest.mark.parametrize("pod", ["gateway", "proctor-gateway-", "proctor-gateway-x1"])
def test_gateway_refuses_to_start_without_an_ordinal(tmp_path: Path, pod: str) -> None:
    result = _run_gateway_wrapper(tmp_path, pod)
    assert result.returncode == 64
    assert "PROCTOR_" not in result.stdout  # the gateway was never started
    assert "cannot derive the gateway slot" in result.stderr


def test_gateways_fit_the_deliveries_partitions() -> None:
    gateway = _gateway()
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    partitions = _effective_settings(container).kafka.deliveries_partitions
    assert partitions == 32
    assert 1 <= gateway["spec"]["replicas"] <= partitions
    for _, doc in APPLIED:
        if doc["kind"] == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if target["name"] == gateway["metadata"]["name"]:
                assert doc["spec"]["maxReplicas"] <= partitions


def test_gateway_closes_gracefully_before_it_is_killed() -> None:
    spec = _gateway()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    settings = _effective_settings(container)
    assert isinstance(settings, GatewaySettings)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep_s = float(pre_stop[1])
    assert sleep_s > 0
    # Each shutdown stage (1001 closes and drain, server shutdown, producer flush) is
    # bounded by the grace; all must fit before SIGKILL.
    needed = sleep_s + 3 * settings.gateway.shutdown_grace_s
    assert spec["terminationGracePeriodSeconds"] > needed


def test_gateway_services_and_disruption_budget() -> None:
    gateway = _gateway()
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    headless = _find("Service", gateway["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    ingress = _find("Service", "proctor-gateway")
    assert ingress["spec"]["type"] == "ClusterIP"
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    for service in (headless, ingress):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = _find("PodDisruptionBudget", "proctor-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_every_workload_has_a_disruption_budget_that_lets_drains_through() -> None:
    budgets = [doc for _, doc in APPLIED if doc["kind"] == "PodDisruptionBudget"]
    for workload in _workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        owner = workload["metadata"]["name"]
        [pdb] = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        # One pod at a time, never zero: with one replica (the dev overlay) minAvailable: 1
        # or maxUnavailable: 0 would block every node drain for good.
        assert pdb["spec"]["maxUnavailable"] == 1, owner
        assert "minAvailable" not in pdb["spec"], owner
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", owner
    assert len(budgets) == len(_workloads())


def test_selectors_match_their_pod_templates() -> None:
    for workload in _workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_notifiers_share_the_heartbeat_partitions() -> None:
    """More notifiers than heartbeat partitions would leave some idle: the surge of a rolling
    update included, they fit."""
    notifier = _find("Deployment", "proctor-notifier")
    partitions = int(_generated_config_map()["data"]["PROCTOR_KAFKA__HEARTBEATS_PARTITIONS"])
    strategy = notifier["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert 2 <= notifier["spec"]["replicas"] + strategy["rollingUpdate"]["maxSurge"] <= partitions
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize(
    ("workload", "variable"),
    [
        (("StatefulSet", "proctor-gateway"), "PROCTOR_GATEWAY__TOKEN_SECRET"),
        (("Deployment", "proctor-lti"), "PROCTOR_LTI__TOKEN_SECRET"),
    ],
)
def test_token_secret_comes_from_the_templated_secret(
    workload: tuple[str, str], variable: str
) -> None:
    (secret,) = yaml_documents(K8S_BASE / SECRET_TEMPLATE)
    (container,) = _find(*workload)["spec"]["template"]["spec"]["containers"]
    refs = [v["valueFrom"]["secretKeyRef"] for v in container["env"] if "valueFrom" in v]
    by_name = {v["name"]: v for v in container["env"]}
    assert "secretKeyRef" in by_name[variable]["valueFrom"]
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
        assert not ref.get("optional", False), "a missing Secret must stop the service"


# Settings that are keys: from a Secret only, never a value in a manifest or the ConfigMap.
SECRET_SETTING = re.compile(r"PROCTOR_\w*(SECRET|PASSWORD|PRIVATE_KEY)\w*")


def test_no_secret_is_a_plain_value_or_in_the_config_map() -> None:
    config = _find("ConfigMap", CONFIG_MAP)["data"]
    assert not [name for name in config if SECRET_SETTING.fullmatch(name)]
    for owner, container in _containers():
        for var in container.get("env", []):
            if SECRET_SETTING.fullmatch(var["name"]) and not var["name"].endswith("_FILE"):
                assert "secretKeyRef" in var.get("valueFrom", {}), f"{owner}: {var['name']}"


def _lti() -> tuple[Doc, Doc]:
    lti = _find("Deployment", "proctor-lti")
    (container,) = lti["spec"]["template"]["spec"]["containers"]
    return lti, container


def test_the_lti_tool_signs_tokens_the_gateways_accept() -> None:
    (gateway,) = _gateway()["spec"]["template"]["spec"]["containers"]
    _, lti = _lti()
    secret_ref = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for c in (gateway, lti)
        for v in c["env"]
        if "valueFrom" in v
    }
    assert secret_ref["PROCTOR_LTI__TOKEN_SECRET"] == secret_ref["PROCTOR_GATEWAY__TOKEN_SECRET"]
    gateway_settings = _effective_settings(gateway)
    lti_settings = _effective_settings(lti)
    assert isinstance(gateway_settings, GatewaySettings)
    assert isinstance(lti_settings, LtiSettings)
    assert lti_settings.lti.token_issuer == gateway_settings.gateway.token_issuer


def test_the_lti_key_is_a_mounted_secret_file() -> None:
    # Every replica signs with, and publishes, the same key: one the operator keeps, never a
    # key each pod makes for itself (what an unset PROCTOR_LTI__PRIVATE_KEY_FILE means).
    lti, container = _lti()
    settings = _effective_settings(container)
    assert isinstance(settings, LtiSettings)
    key_file = settings.lti.private_key_file
    assert key_file is not None
    [mount] = [
        m
        for m in container["volumeMounts"]
        if key_file.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mount.get("readOnly") is True
    [volume] = [v for v in lti["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "proctor-lti-key"
    assert not volume["secret"].get("optional", False), "a missing key must stop the tool"
    assert "items" not in volume["secret"], "previous public keys go in the same Secret"
    for previous in settings.lti.previous_public_key_files:
        assert previous.startswith(mount["mountPath"].rstrip("/") + "/")


def test_the_lti_tool_is_stateless_and_redundant() -> None:
    lti, container = _lti()
    assert lti["spec"]["replicas"] >= 2
    assert lti["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    settings = _effective_settings(container)
    assert isinstance(settings, LtiSettings)
    # Browsers are sent to these: the public host, over https, the same origin for both.
    assert settings.lti.public_url.startswith("https://")
    assert settings.lti.app_url == settings.lti.public_url
    service = _find("Service", "proctor-lti")
    pod_labels = lti["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    namespace = _find("Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for owner, pod in _pod_specs():
        assert pod["automountServiceAccountToken"] is False, owner
        security: dict[str, Any] = pod["securityContext"]
        assert security["runAsNonRoot"] is True, owner
        assert security["seccompProfile"]["type"] == "RuntimeDefault", owner
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, owner
            assert ctx["capabilities"]["drop"] == ["ALL"], owner
            assert ctx["readOnlyRootFilesystem"] is True, owner


def test_services_get_writable_scratch_on_a_read_only_root() -> None:
    # Faust keeps its data directory under the working directory; Python uses /tmp.
    needed = {"/tmp", dockerfile_instruction("WORKDIR")}
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            mounted = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs}
            assert needed <= mounted, f"{workload['metadata']['name']}: {needed - mounted}"


def test_pods_run_as_the_image_user() -> None:
    uid = int(dockerfile_instruction("USER").split(":")[0])
    assert uid != 0
    for owner, pod in _pod_specs():
        assert pod["securityContext"]["runAsUser"] == uid, owner
        assert pod["securityContext"]["runAsGroup"] == uid, owner
