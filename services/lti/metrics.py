"""Every Prometheus metric of the LTI tool, built in one place on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from adapters.runtime_metrics import add_runtime_collectors


class LtiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        add_runtime_collectors(registry, "lti")
        self.logins = Counter(
            "lti_logins_total", "OIDC logins started for a platform", registry=registry
        )
        self.launches = Counter(
            "lti_launches_total",
            "launches honoured, by page and role",
            ["view", "role"],
            registry=registry,
        )
        self.refusals = Counter(
            "lti_refusals_total",
            "logins and launches refused, by code",
            ["code"],
            registry=registry,
        )
        self.roster_reads = Counter(
            "lti_roster_reads_total",
            "course rosters asked of a platform (NRPS), by outcome",
            ["outcome"],
            registry=registry,
        )
