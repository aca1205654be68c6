"""The kustomize overlays of k8s/overlays/ (dev, prod, prod-gateway-api) and the base, as
``kustomize build`` renders them: valid objects (Kubernetes API schemas; Strimzi and Gateway
API CRD schemas), and what each overlay promises: the Ingress or HTTPRoute routes only public
ports, the NetworkPolicies allow exactly the documented traffic, every workload has a
disruption budget and spreads over zones in prod, the Strimzi topics and ACLs match what the
services use, no secret is in a ConfigMap. Offline; kustomize is found or installed
(tests/deploy/kustomize.py), never skipped."""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from adapters.kafka_topics import topic_specs
from adapters.settings import CommonSettings
from services.gateway.settings import GatewaySettings
from services.lti.settings import LtiSettings
from services.notifier.settings import NotifierSettings
from services.router.settings import RouterSettings
from services.status.settings import Settings as StatusSettings
from tests.deploy import crd_schemas, kustomize
from tests.deploy.netpol import External, Pod, allowed
from tests.deploy.support import (
    K8S_BASE,
    K8S_DIR,
    KUBERNETES_VERSIONS,
    PROCTOR_NAME,
    Doc,
    env_names,
    listen,
    load_settings,
    public_port,
    settings_for,
)

# Building kustomize first, if it has to be, takes longer than the suite's default timeout.
pytestmark = pytest.mark.timeout(kustomize.INSTALL_TIMEOUT_S)

OVERLAYS = K8S_DIR / "overlays"
TARGETS = {
    "base": K8S_BASE,
    "dev": OVERLAYS / "dev",
    "prod": OVERLAYS / "prod",
    "prod-gateway-api": OVERLAYS / "prod-gateway-api",
}
PROD = ("prod", "prod-gateway-api")
NAMESPACE = "proctoring"
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
PROJECT = {"app.kubernetes.io/part-of": "exam-proctoring"}
# The namespaces the prod overlays let in (their documented parameters).
INGRESS_NAMESPACE = {"prod": "ingress-nginx", "prod-gateway-api": "gateway-system"}
MONITORING_NAMESPACE = "monitoring"
# Who talks to what (the services' code): the Secrets each pod must mount in prod.
KAFKA_CLIENTS = {
    "proctor-gateway",
    "proctor-router",
    "proctor-status",
    "proctor-notifier",
    "proctor-init",
}
REDIS_CLIENTS = {"proctor-gateway", "proctor-status", "proctor-lti"}
SECRET_STAND_IN = "s" * 48
SECRET_SETTING = re.compile(r"PROCTOR_\w*(SECRET|PASSWORD|PRIVATE_KEY)\w*")


def render(target: str) -> list[Doc]:
    return kustomize.build(TARGETS[target])


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def workloads(docs: list[Doc]) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]


def pod_owners(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload or Job, its pod template)."""
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS | {"Job"}:
            yield doc, doc["spec"]["template"]


def container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            assert "secretKeyRef" in var["valueFrom"], var["name"]
            env[var["name"]] = SECRET_STAND_IN
    return env


def settings_of(docs: list[Doc], owner: str) -> CommonSettings:
    [(_, template)] = [(o, t) for o, t in pod_owners(docs) if o["metadata"]["name"] == owner]
    [container] = template["spec"]["containers"]
    return load_settings(settings_for(container["command"]), container_env(docs, container))


def project_pod(template: Doc) -> Pod:
    return Pod(NAMESPACE, template["metadata"]["labels"])


# -- every target builds and validates ---------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_builds_and_everything_lives_in_the_namespace(target: str) -> None:
    docs = render(target)
    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{doc['kind']}"
    # Secrets are created by the operator (README) or by Strimzi, never applied from here.
    assert not of_kind(docs, "Secret")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_rendered_object_is_valid(target: str, version: str) -> None:
    failures = []
    for doc in render(target):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            if crd_schemas.is_custom(doc):
                crd_schemas.validate(doc, version)
            else:
                assert kubernetes_validate.validate(doc, version, strict=True) == version
        except (AssertionError, kubernetes_validate.ValidationError) as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


# API groups of the Kubernetes API itself (kubernetes-validate's); "v1" is the core group.
BUILT_IN_GROUPS = {"v1", "apps", "batch", "policy", "networking.k8s.io"}


def test_every_custom_kind_has_a_crd_schema() -> None:
    custom = {
        (doc["apiVersion"], doc["kind"])
        for target in TARGETS
        for doc in render(target)
        if doc["apiVersion"].split("/")[0] not in BUILT_IN_GROUPS
    }
    assert custom == {
        ("kafka.strimzi.io/v1beta2", "Kafka"),
        ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
        ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
        ("kafka.strimzi.io/v1beta2", "KafkaUser"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    }
    assert all(crd_schemas.is_custom({"apiVersion": a, "kind": k}) for a, k in custom)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("KafkaUser", ["spec", "authorisation"], {"type": "simple"}),
        ("KafkaTopic", ["spec", "partitions"], "12"),
        ("Kafka", ["spec", "kafka", "listeners", 0, "authentication", "type"], "scram"),
        ("KafkaNodePool", ["spec", "storage", "volumes", 0, "sise"], "100Gi"),
        ("HTTPRoute", ["spec", "rules", 0, "backendRef"], []),
        ("HTTPRoute", ["metadata", "labelz"], {}),
    ],
)
def test_the_crd_validator_rejects_what_the_api_server_would(
    kind: str, path: list[Any], value: object
) -> None:
    [doc] = of_kind(render("prod-gateway-api"), kind)[:1]
    broken = copy.deepcopy(doc)
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    crd_schemas.validate(doc, KUBERNETES_VERSIONS[-1])
    with pytest.raises(crd_schemas.CustomResourceError):
        crd_schemas.validate(broken, KUBERNETES_VERSIONS[-1])


def test_the_strimzi_resources_are_valid_v1_too() -> None:
    # Strimzi 1.0 and later serve only kafka.strimzi.io/v1: moving to it changes apiVersion.
    for doc in render("prod"):
        if doc["apiVersion"].startswith("kafka.strimzi.io/"):
            crd_schemas.validate({**doc, "apiVersion": "kafka.strimzi.io/v1"}, "1.37")


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_env_names_are_settings_and_every_process_accepts_its_settings(target: str) -> None:
    docs = render(target)
    shared = env_names(CommonSettings)
    for config in of_kind(docs, "ConfigMap"):
        assert set(config["data"]) <= shared, sorted(set(config["data"]) - shared)
    for _, template in pod_owners(docs):
        for container in template["spec"]["containers"]:
            model = settings_for(container["command"])
            used = {var["name"] for var in container.get("env", [])}
            used |= set(PROCTOR_NAME.findall("\n".join(container["command"])))
            assert used <= env_names(model), sorted(used - env_names(model))
            # The settings' own checks (Kafka and Redis security consistent, ...) pass.
            load_settings(model, container_env(docs, container))


@pytest.mark.parametrize("target", TARGETS)
def test_no_secret_value_in_any_config_map(target: str) -> None:
    for config in of_kind(render(target), "ConfigMap"):
        for name, value in config["data"].items():
            if SECRET_SETTING.fullmatch(name):
                # Only the path of a mounted Secret, never the secret itself.
                assert name.endswith("_FILE"), name
                assert value.startswith("/etc/proctor/"), f"{name}={value}"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{name}: credentials in a URL"


# -- dev -----------------------------------------------------------------------------------


def test_dev_runs_one_of_each_small_without_policies_or_spread() -> None:
    docs, base = render("dev"), render("base")
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        assert workload["spec"]["replicas"] == 1, name
        assert "topologySpreadConstraints" not in workload["spec"]["template"]["spec"], name
        [container] = workload["spec"]["template"]["spec"]["containers"]
        [base_container] = find(base, workload["kind"], name)["spec"]["template"]["spec"][
            "containers"
        ]
        assert container["resources"]["requests"]["cpu"] == "50m", name
        assert base_container["resources"]["requests"]["cpu"] != "50m", name
    assert not of_kind(docs, "NetworkPolicy")
    assert not of_kind(docs, "Ingress")
    for owner in KAFKA_CLIENTS:
        assert settings_of(docs, owner).kafka.security_protocol == "PLAINTEXT", owner


# -- prod: budgets and spread ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", "dev", *PROD])
def test_every_workload_has_a_budget_that_lets_drains_through(target: str) -> None:
    docs = render(target)
    budgets = of_kind(docs, "PodDisruptionBudget")
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, workload["metadata"]["name"]
        assert matching[0]["spec"]["maxUnavailable"] == 1
    assert len(budgets) == len(workloads(docs))


@pytest.mark.parametrize("target", PROD)
def test_every_workload_spreads_over_zones_and_hosts_in_prod(target: str) -> None:
    for workload in workloads(render(target)):
        name = workload["metadata"]["name"]
        template = workload["spec"]["template"]
        constraints = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
        assert set(constraints) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        zone, host = (
            constraints["topology.kubernetes.io/zone"],
            constraints["kubernetes.io/hostname"],
        )
        assert zone["whenUnsatisfiable"] == "DoNotSchedule", name
        assert zone["nodeTaintsPolicy"] == "Honor", name
        assert host["whenUnsatisfiable"] == "ScheduleAnyway", name
        for constraint in constraints.values():
            assert constraint["maxSkew"] == 1, name
            selector = constraint["labelSelector"]["matchLabels"]
            # Counts exactly this workload's pods.
            assert selector == workload["spec"]["selector"]["matchLabels"], name
            if workload["kind"] == "Deployment":
                assert constraint["matchLabelKeys"] == ["pod-template-hash"], name


# -- prod: the public entry ----------------------------------------------------------------


def _service_target_port(docs: list[Doc], service_name: str, port: int) -> tuple[Doc, int]:
    """The pod template behind a Service and the container port its ``port`` reaches."""
    service = find(docs, "Service", service_name)
    [service_port] = [p for p in service["spec"]["ports"] if p["port"] == port]
    selector = service["spec"]["selector"]
    [workload] = [
        w
        for w in workloads(docs)
        if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    ]
    [container] = workload["spec"]["template"]["spec"]["containers"]
    target = service_port["targetPort"]
    if isinstance(target, str):
        [target] = [p["containerPort"] for p in container["ports"] if p["name"] == target]
    return workload, int(target)


def _public_ports(docs: list[Doc]) -> dict[str, int]:
    """Workload -> the port clients may reach: the gateways' WebSocket, the LTI tool's port."""
    gateway = settings_of(docs, "proctor-gateway")
    lti = settings_of(docs, "proctor-lti")
    assert isinstance(gateway, GatewaySettings) and isinstance(lti, LtiSettings)
    gateway_port = public_port(gateway)
    assert gateway_port is not None
    return {"proctor-gateway": gateway_port, "proctor-lti": lti.lti.port}


def _ops_ports(docs: list[Doc]) -> dict[str, int]:
    """Workload -> the port serving its /healthz, /readyz and /metrics."""
    return {
        w["metadata"]["name"]: listen(settings_of(docs, w["metadata"]["name"]))[1]
        for w in workloads(docs)
    }


def _public_host(docs: list[Doc]) -> str:
    lti = settings_of(docs, "proctor-lti")
    assert isinstance(lti, LtiSettings)
    host = urlsplit(lti.lti.public_url).hostname
    assert host and urlsplit(lti.lti.app_url).hostname == host
    return host


def _routes(docs: list[Doc]) -> dict[str, tuple[str, int]]:
    """Path prefix -> (Service, port) of the Ingress or the HTTPRoute."""
    routes: dict[str, tuple[str, int]] = {}
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["pathType"] == "Prefix"
                backend = path["backend"]["service"]
                routes[path["path"]] = (backend["name"], backend["port"]["number"])
    for route in of_kind(docs, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            [match] = rule["matches"]
            assert match["path"]["type"] == "PathPrefix"
            [backend] = rule["backendRefs"]
            assert backend.get("kind", "Service") == "Service"
            routes[match["path"]["value"]] = (backend["name"], backend["port"])
    return routes


@pytest.mark.parametrize("target", PROD)
def test_the_public_host_routes_lti_to_the_tool_and_the_rest_to_the_gateways(target: str) -> None:
    docs = render(target)
    routes = _routes(docs)
    assert routes == {"/lti/": ("proctor-lti", 8090), "/": ("proctor-gateway", 8080)}
    public, ops = _public_ports(docs), _ops_ports(docs)
    for service, port in routes.values():
        workload, container_port = _service_target_port(docs, service, port)
        name = workload["metadata"]["name"]
        assert container_port == public[name], f"{service}:{port} is not {name}'s public port"
        # The gateways' ops port (9100) is never routed; the LTI tool's ops routes share its
        # one port but sit outside /lti/.
        assert container_port != 9100
        if name == "proctor-gateway":
            assert container_port != ops[name]


def test_the_ingress_is_ingress_nginx_with_tls_and_websocket_timeouts() -> None:
    docs = render("prod")
    [ingress] = of_kind(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    [rule] = ingress["spec"]["rules"]
    [tls] = ingress["spec"]["tls"]
    # One origin: the LTI tool sends browsers to the host the ingress serves, under its cert.
    assert rule["host"] == _public_host(docs)
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]
    assert not of_kind(docs, "HTTPRoute")


def test_the_httproute_replaces_the_ingress_on_the_same_host() -> None:
    docs = render("prod-gateway-api")
    assert not of_kind(docs, "Ingress")
    [route] = of_kind(docs, "HTTPRoute")
    assert route["spec"]["hostnames"] == [_public_host(docs)]
    [parent] = route["spec"]["parentRefs"]
    assert parent["kind"] == "Gateway" and parent["sectionName"]
    [gateway_rule] = [r for r in route["spec"]["rules"] if r["matches"][0]["path"]["value"] == "/"]
    assert gateway_rule["timeouts"] == {"request": "0s"}  # WebSockets last the exam


def test_the_host_is_set_in_one_place(tmp_path: Path) -> None:
    # Copy the manifests, change the host where the prod overlay sets it, and every use moves.
    copied = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copied)
    overlay = copied / "overlays" / "prod" / "kustomization.yaml"
    text = overlay.read_text()
    assert text.count("value: proctoring.example.edu") == 1
    overlay.write_text(text.replace("value: proctoring.example.edu", "value: exams.uni.example"))
    for name in PROD:
        docs = kustomize.build(copied / "overlays" / name)
        assert _public_host(docs) == "exams.uni.example"
        hosts = [h for i in of_kind(docs, "Ingress") for h in i["spec"]["tls"][0]["hosts"]]
        hosts += [r["host"] for i in of_kind(docs, "Ingress") for r in i["spec"]["rules"]]
        hosts += [h for r in of_kind(docs, "HTTPRoute") for h in r["spec"]["hostnames"]]
        assert hosts and set(hosts) == {"exams.uni.example"}, name


# -- prod: network policies ----------------------------------------------------------------


def _pods(docs: list[Doc]) -> dict[str, Pod]:
    return {o["metadata"]["name"]: project_pod(t) for o, t in pod_owners(docs)}


def _kafka_listener(docs: list[Doc]) -> tuple[Doc, Doc]:
    [kafka] = of_kind(docs, "Kafka")
    [listener] = kafka["spec"]["kafka"]["listeners"]
    return kafka, listener


def _kafka_broker(docs: list[Doc]) -> Pod:
    """A broker pod as Strimzi labels it (node pools): cluster, kind, pool, roles, and its own
    part-of (Strimzi overwrites that label with strimzi-<cluster>)."""
    kafka, _ = _kafka_listener(docs)
    [pool] = of_kind(docs, "KafkaNodePool")
    cluster = kafka["metadata"]["name"]
    return Pod(
        NAMESPACE,
        {
            "strimzi.io/cluster": cluster,
            "strimzi.io/kind": "Kafka",
            "strimzi.io/name": f"{cluster}-kafka",
            "strimzi.io/pool-name": pool["metadata"]["name"],
            "strimzi.io/broker-role": "true",
            "strimzi.io/controller-role": "true",
            "app.kubernetes.io/part-of": f"strimzi-{cluster}",
        },
    )


REDIS = Pod(NAMESPACE, {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"})
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
PROMETHEUS = Pod(MONITORING_NAMESPACE, {"app.kubernetes.io/name": "prometheus"})
ELSEWHERE = Pod("default", {"app": "curious"})
STRANGER = Pod(NAMESPACE, {"app": "debug-shell"})  # a pod in the namespace, not a service's
INTERNET = External("52.94.0.10")  # e.g. dynamodb.us-east-1.amazonaws.com


def _controller(target: str) -> Pod:
    return Pod(INGRESS_NAMESPACE[target], {"app.kubernetes.io/name": "ingress-nginx"})


@pytest.mark.parametrize("target", PROD)
def test_from_outside_only_the_public_ports_and_the_scrapes_get_in(target: str) -> None:
    docs = render(target)
    policies = of_kind(docs, "NetworkPolicy")
    pods = _pods(docs)
    public, ops = _public_ports(docs), _ops_ports(docs)
    broker = _kafka_broker(docs)
    _, listener = _kafka_listener(docs)
    every_port = {p for ports in (public, ops) for p in ports.values()} | {listener["port"], 6379}
    controller = _controller(target)
    for name, pod in pods.items():
        for port in every_port:
            # The ingress controller: the gateways' and the LTI tool's public ports only.
            assert allowed(policies, controller, pod, port) == (public.get(name) == port), (
                f"ingress -> {name}:{port}"
            )
            # Prometheus: each workload's ops port only (the LTI tool's is its one port).
            assert allowed(policies, PROMETHEUS, pod, port) == (ops.get(name) == port), (
                f"prometheus -> {name}:{port}"
            )
            # Any other namespace, and strangers in this one: nothing.
            assert not allowed(policies, ELSEWHERE, pod, port), f"elsewhere -> {name}:{port}"
            assert not allowed(policies, STRANGER, pod, port), f"stranger -> {name}:{port}"
            # The services do not call each other.
            for other_name, other in pods.items():
                assert not allowed(policies, other, pod, port), f"{other_name} -> {name}:{port}"
    # The gateways' ops port in particular: Prometheus only.
    assert ops["proctor-gateway"] == 9100
    assert allowed(policies, PROMETHEUS, pods["proctor-gateway"], 9100)
    assert not allowed(policies, controller, pods["proctor-gateway"], 9100)
    for peer in (controller, PROMETHEUS, ELSEWHERE, STRANGER):
        assert not allowed(policies, peer, broker, listener["port"])
        assert not allowed(policies, peer, REDIS, 6379)


@pytest.mark.parametrize("target", PROD)
def test_the_gateways_ops_port_is_open_to_no_other_namespace_than_monitoring(target: str) -> None:
    # The same, read off the policies themselves rather than probed.
    docs = render(target)
    gateway = _pods(docs)["proctor-gateway"]
    for policy in of_kind(docs, "NetworkPolicy"):
        selected = policy["spec"]["podSelector"]
        if not all(gateway.labels.get(k) == v for k, v in selected.get("matchLabels", {}).items()):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if rule.get("ports") and 9100 not in ports:
                continue
            for peer in rule.get("from", [{}]):
                namespaces = peer.get("namespaceSelector", {}).get("matchLabels", {})
                assert namespaces == {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}, policy[
                    "metadata"
                ]["name"]


@pytest.mark.parametrize("target", PROD)
def test_kafka_and_redis_are_for_the_services_pods_only(target: str) -> None:
    docs = render(target)
    policies = of_kind(docs, "NetworkPolicy")
    broker = _kafka_broker(docs)
    kafka, listener = _kafka_listener(docs)
    for name, pod in _pods(docs).items():
        assert allowed(policies, pod, broker, listener["port"]), name
        assert allowed(policies, pod, REDIS, 6379), name
        assert not allowed(policies, pod, broker, 9091), f"{name}: replication port"
    # Strimzi's own NetworkPolicy, from the listener's peers, admits the same pods.
    [peer] = listener["networkPolicyPeers"]
    assert peer == {"podSelector": {"matchLabels": PROJECT}}
    # The services' selector never matches Strimzi's pods (it would restrict their egress).
    for doc in docs:
        if doc["apiVersion"].startswith("kafka.strimzi.io/"):
            labels = doc["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/part-of") != PROJECT["app.kubernetes.io/part-of"]
            assert (
                labels.get("strimzi.io/cluster", kafka["metadata"]["name"])
                == kafka["metadata"]["name"]
            )


@pytest.mark.parametrize("target", PROD)
def test_the_services_reach_only_dns_kafka_redis_and_https(target: str) -> None:
    docs = render(target)
    policies = of_kind(docs, "NetworkPolicy")
    pods = _pods(docs)
    broker = _kafka_broker(docs)
    _, listener = _kafka_listener(docs)
    for name, pod in pods.items():
        assert allowed(policies, pod, DNS, 53, "UDP"), name
        assert allowed(policies, pod, DNS, 53, "TCP"), name
        assert allowed(policies, pod, broker, listener["port"]), name
        assert allowed(policies, pod, REDIS, 6379), name
        # DynamoDB (AWS endpoints), LMS key sets and rosters: HTTPS.
        assert allowed(policies, pod, INTERNET, 443), name
        assert allowed(policies, pod, External("2600:1f18::1"), 443), name
        for port in (80, 9092, 6380, 8000):
            assert not allowed(policies, pod, INTERNET, port), f"{name} -> internet:{port}"
        assert not allowed(policies, pod, broker, 9092), name
        assert not allowed(policies, pod, ELSEWHERE, 8080), name
        assert not allowed(policies, pod, DNS, 8080), name
    # Strimzi's pods are not the services': their egress (the Kubernetes API) stays open.
    assert allowed(policies, broker, External("10.0.0.1"), 6443)


def test_the_policy_ports_are_the_ports_the_services_listen_on() -> None:
    docs = render("prod")
    ports = {
        p["metadata"]["name"]: sorted(
            port["port"] for rule in p["spec"].get("ingress", []) for port in rule.get("ports", [])
        )
        for p in of_kind(docs, "NetworkPolicy")
    }
    public, ops = _public_ports(docs), _ops_ports(docs)
    _, listener = _kafka_listener(docs)
    assert ports["ingress-to-gateways"] == [public["proctor-gateway"]]
    assert ports["ingress-to-lti"] == [public["proctor-lti"]]
    for name, port in ops.items():
        assert ports[name.replace("proctor-", "prometheus-to-")] == [port]
    assert ports["services-to-kafka"] == [listener["port"]]
    # Every workload's scrape annotation names its ops port.
    for workload in workloads(docs):
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == ops[workload["metadata"]["name"]]


# -- prod: Strimzi -------------------------------------------------------------------------


def test_the_kafka_cluster_is_kraft_with_scram_over_tls_and_acls() -> None:
    docs = render("prod")
    kafka, listener = _kafka_listener(docs)
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    annotations = kafka["metadata"]["annotations"]
    assert annotations["strimzi.io/node-pools"] == "enabled"
    assert annotations["strimzi.io/kraft"] == "enabled"
    assert listener["tls"] is True and listener["port"] == 9093
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    config = kafka["spec"]["kafka"]["config"]
    assert config["min.insync.replicas"] == 2
    assert config["default.replication.factor"] == 3
    assert config["auto.create.topics.enable"] is False
    [pool] = of_kind(docs, "KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert pool["spec"]["replicas"] == 3
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    volumes = pool["spec"]["storage"]["volumes"]
    assert [v["type"] for v in volumes] == ["persistent-claim"]
    assert volumes[0]["deleteClaim"] is False


def test_the_services_connect_to_the_strimzi_listener_with_its_user_and_ca() -> None:
    docs = render("prod")
    kafka, listener = _kafka_listener(docs)
    [user] = of_kind(docs, "KafkaUser")
    cluster = kafka["metadata"]["name"]
    for owner in KAFKA_CLIENTS:
        settings = settings_of(docs, owner).kafka
        assert settings.bootstrap == f"{cluster}-kafka-bootstrap.{NAMESPACE}.svc:{listener['port']}"
        assert settings.security_protocol == "SASL_SSL"
        assert settings.sasl_mechanism == "SCRAM-SHA-512"
        assert settings.sasl_username == user["metadata"]["name"]
        assert settings.sasl_password is None
        assert settings.replication_factor == 3


def _mounted_secret(docs: list[Doc], owner: str, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file at ``path`` in ``owner``'s pod; asserts it is there."""
    [(_, template)] = [(o, t) for o, t in pod_owners(docs) if o["metadata"]["name"] == owner]
    [container] = template["spec"]["containers"]
    directory, _, file = path.rpartition("/")
    [mount] = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    assert mount.get("readOnly") is True and "subPath" not in mount, owner
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert not secret.get("optional", False), f"{owner}: a missing Secret must stop the pod"
    [item] = [i for i in secret["items"] if i["path"] == file]
    return secret["secretName"], item["key"]


def test_kafka_and_redis_secrets_are_mounted_files_where_they_are_used() -> None:
    docs = render("prod")
    kafka, _ = _kafka_listener(docs)
    [user] = of_kind(docs, "KafkaUser")
    for owner in KAFKA_CLIENTS:
        settings = settings_of(docs, owner)
        assert settings.kafka.sasl_password_file and settings.kafka.ssl_cafile
        assert _mounted_secret(docs, owner, settings.kafka.sasl_password_file) == (
            user["metadata"]["name"],
            "password",
        )
        assert _mounted_secret(docs, owner, settings.kafka.ssl_cafile) == (
            f"{kafka['metadata']['name']}-cluster-ca-cert",
            "ca.crt",
        )
    for owner in REDIS_CLIENTS:
        settings = settings_of(docs, owner)
        assert settings.redis.password_file
        assert _mounted_secret(docs, owner, settings.redis.password_file) == (
            "proctor-redis",
            "password",
        )
    # Least privilege: the LTI tool never gets the Kafka user's password.
    [lti] = [t for o, t in pod_owners(docs) if o["metadata"]["name"] == "proctor-lti"]
    secrets = {v["secret"]["secretName"] for v in lti["spec"]["volumes"] if "secret" in v}
    assert user["metadata"]["name"] not in secrets


def test_the_kafka_topics_are_the_topic_specs_replicated_three_times() -> None:
    docs = render("prod")
    settings = settings_of(docs, "proctor-status").kafka
    specs = {spec.name: spec for spec in topic_specs(settings)}
    topics = {
        t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(docs, "KafkaTopic")
    }
    assert set(topics) == set(specs)
    kafka, _ = _kafka_listener(docs)
    for name, topic in topics.items():
        spec = specs[name]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert topic["spec"]["partitions"] == spec.partitions, name
        assert topic["spec"]["replicas"] == settings.replication_factor == 3, name
        config = {key: str(value) for key, value in topic["spec"]["config"].items()}
        assert config == {**spec.config, "min.insync.replicas": "2"}, name


SERVICES_DIR = K8S_DIR.parent / "services"


def _consumer_groups(
    router: RouterSettings, status: StatusSettings, notifier: NotifierSettings
) -> dict[tuple[str, str], str | None]:
    """Every ``group_id=`` the services' code passes to a Kafka consumer, by (file, expression),
    as the group it names with these settings (None: no group, partitions assigned)."""
    return {
        ("router/presence.py", "None"): None,
        ("router/plain_log.py", "opts.app_id"): router.router.app_id,
        # The Faust engine: faust.App(opts.app_id, ...) joins the group of its app id.
        ("router/faust_engine.py", "faust.App(opts.app_id"): router.router.app_id,
        ("status/service.py", "cfg.group_id"): status.status.group_id,
        ("notifier/alerts_loop.py", "options.group_id"): notifier.notifier.group_id,
        ("notifier/liveness_loop.py", 'f"{self._options.group_id}-liveness"'): (
            f"{notifier.notifier.group_id}-liveness"
        ),
    }


def test_the_acl_groups_are_every_group_the_code_joins() -> None:
    # A consumer group added to the code without its ACL would be refused by the brokers in
    # prod only: this lists every group_id= (and the Faust app) in services/ and fails on a new
    # one, so the KafkaUser (k8s/strimzi/user.yaml) and _consumer_groups learn about it.
    found = set()
    for path in sorted(SERVICES_DIR.rglob("*.py")):
        text = re.sub(r"\s+", "", path.read_text())
        relative = path.relative_to(SERVICES_DIR).as_posix()
        for expression in re.findall(r"group_id=([^,)]+)", text):
            found.add((relative, expression))
        found |= {(relative, "faust.App(" + m) for m in re.findall(r"faust\.App\(([\w.]+)", text)}
    defaults = (RouterSettings(), StatusSettings(), NotifierSettings())
    assert found == set(_consumer_groups(*defaults))


def test_the_kafka_user_may_use_exactly_the_services_topics_and_groups() -> None:
    docs = render("prod")
    [user] = of_kind(docs, "KafkaUser")
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    authorization = user["spec"]["authorization"]
    assert authorization["type"] == "simple"
    router = settings_of(docs, "proctor-router")
    status = settings_of(docs, "proctor-status")
    notifier = settings_of(docs, "proctor-notifier")
    assert isinstance(router, RouterSettings)
    assert isinstance(status, StatusSettings)
    assert isinstance(notifier, NotifierSettings)
    topics = {spec.name for spec in topic_specs(status.kafka)}
    groups = {group for group in _consumer_groups(router, status, notifier).values() if group}
    granted: dict[str, set[str]] = {"topic": set(), "group": set()}
    for acl in authorization["acls"]:
        resource = acl["resource"]
        assert resource["type"] in granted, f"no {resource['type']} ACLs wanted"
        assert resource["patternType"] == "literal", resource
        assert acl.get("host", "*") == "*"
        assert "operation" not in acl, "the deprecated single operation"
        wanted = (
            {"Describe", "Read", "Write"} if resource["type"] == "topic" else {"Describe", "Read"}
        )
        assert set(acl["operations"]) == wanted, resource
        assert resource["name"] not in granted[resource["type"]], f"twice: {resource}"
        granted[resource["type"]].add(resource["name"])
    assert granted == {"topic": topics, "group": groups}


def test_prod_settings_replicate_topics_and_use_aws_dynamodb() -> None:
    docs = render("prod")
    for owner, _ in pod_owners(docs):
        settings = settings_of(docs, owner["metadata"]["name"])
        assert settings.kafka.replication_factor == 3
        assert settings.dynamo.endpoint is None
    [config] = of_kind(docs, "ConfigMap")
    assert config["data"]["PROCTOR_KAFKA__REPLICATION_FACTOR"] == "3"


def test_the_overlay_sources_are_what_the_readme_lists() -> None:
    # Every component and overlay directory is a kustomization the README names.
    readme = (K8S_DIR / "README.md").read_text()
    for directory in sorted((K8S_DIR / "components").iterdir()) + sorted(OVERLAYS.iterdir()):
        assert (directory / "kustomization.yaml").is_file(), directory
        assert f"{directory.parent.name}/{directory.name}" in readme, directory.name
    for overlay in (OVERLAYS / "prod", OVERLAYS / "dev"):
        [kustomization] = yaml.safe_load_all((overlay / "kustomization.yaml").read_text())
        assert kustomization["namespace"] == NAMESPACE
