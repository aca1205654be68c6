"""NetworkPolicy semantics (networking.k8s.io/v1), enough to ask rendered policies whether one
endpoint may open a connection to another on a port.

- A pod is isolated for ingress (egress) once any policy of its namespace selects it with
  that policy type; then only what some such policy's rules allow gets through. Policies add.
- policyTypes, when absent: Ingress, plus Egress if the policy has egress rules.
- A rule with no ``from``/``to`` matches every peer, with no ``ports`` every port.
- A peer with podSelector only: pods of the policy's namespace; namespaceSelector only: every
  pod of the namespaces selected; both: those pods of those namespaces. ipBlock: addresses
  outside the cluster only (its effect on pod addresses is up to the CNI: never relied on).
- Ports are numbers here: the manifests use numbers, so a named port is refused outright.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.deploy.support import Doc

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Labels
    namespace_labels: Labels = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every namespace carries its name as a label (Kubernetes 1.21 and later).
        labels = {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}
        object.__setattr__(self, "namespace_labels", labels)


@dataclass(frozen=True)
class External:
    """An address outside the cluster (a cloud API, an LMS)."""

    ip: str


Endpoint = Pod | External


def selects(selector: Mapping[str, Any] | None, labels: Labels) -> bool:
    """A LabelSelector against labels; an empty selector selects everything."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        address = ipaddress.ip_address(other.ip)
        block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        if address.version != block.version or address not in block:
            return False
        excepted = (ipaddress.ip_network(cidr) for cidr in peer["ipBlock"].get("except", []))
        return not any(address.version == e.version and address in e for e in excepted)
    if isinstance(other, External):
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], other.namespace_labels)
    else:
        in_namespace = other.namespace == namespace
    return in_namespace and selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: Iterable[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for spec in ports:
        if spec.get("protocol", "TCP") != protocol:
            continue
        if "port" not in spec:
            return True
        first = spec["port"]
        assert isinstance(first, int), f"named port {first!r}: use numbers"
        if first <= port <= spec.get("endPort", first):
            return True
    return False


def policy_types(policy: Doc) -> set[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def _isolating(policies: Iterable[Doc], pod: Pod, direction: str) -> list[Doc]:
    return [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in policy_types(p)
        and selects(p["spec"]["podSelector"], pod.labels)
    ]


def _rules_allow(
    policies: list[Doc], direction: str, other: Endpoint, port: int, protocol: str
) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        namespace = policy["metadata"]["namespace"]
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key) or [{}]
            matched = any(_peer_matches(peer, namespace, other) if peer else True for peer in peers)
            if matched and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(
    policies: Iterable[Doc], source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """May ``source`` open a connection to ``target`` on ``port``?"""
    policies = [p for p in policies if p["kind"] == "NetworkPolicy"]
    if isinstance(source, Pod):
        egress = _isolating(policies, source, "Egress")
        if egress and not _rules_allow(egress, "Egress", target, port, protocol):
            return False
    if isinstance(target, Pod):
        ingress = _isolating(policies, target, "Ingress")
        if ingress and not _rules_allow(ingress, "Ingress", source, port, protocol):
            return False
    return True
