"""docker-compose.yml (the optional Docker path): structure checked offline against the
services' settings and entry points; no Docker needed."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adapters.ops_http import start_ops_server
from adapters.settings import CommonSettings
from services.gateway.settings import GatewaySettings
from services.lti.settings import LtiSettings
from tests.conftest import scaled
from tests.deploy.support import (
    COMPOSE_FILE,
    REPO,
    Doc,
    entry_points,
    env_names,
    listen,
    load_settings,
    public_port,
    service_of,
    settings_for,
    yaml_documents,
)

IMAGE = "exam-proctoring:dev"
INFRA = {"kafka", "redis", "dynamodb"}
MONITORING = {"prometheus", "alertmanager", "grafana"}


def _compose() -> Doc:
    (compose,) = yaml_documents(COMPOSE_FILE)
    return compose


SERVICES: dict[str, Doc] = _compose()["services"]
PROCTOR = {name: svc for name, svc in SERVICES.items() if svc.get("image") == IMAGE}
RUNNING = {name: svc for name, svc in PROCTOR.items() if service_of(svc["command"])}


# Variables compose requires (``${VAR:?message}``): what an operator sets, for the tests.
REQUIRED = {"PROCTOR_TOKEN_SECRET": "operator-chosen-secret-0123456789abcdef0123456789"}


def _interpolate(value: Any) -> str:
    """Compose's ``${VAR:-default}`` with VAR unset, as on a fresh checkout; ``${VAR:?..}``
    (required) with what an operator would have set."""

    def default(match: re.Match[str]) -> str:
        name, kind, text = match.group(1), match.group(2), match.group(3)
        if kind == "?":
            assert name in REQUIRED, f"{match.group(0)}: required, but not in REQUIRED"
            return REQUIRED[name]
        assert kind == "-", f"{match.group(0)} has no default"
        return str(text)

    return re.sub(r"\$\{(\w+)(?::([-?])([^}]*))?\}", default, str(value))


def _env(svc: Doc) -> dict[str, str]:
    return {name: _interpolate(value) for name, value in svc.get("environment", {}).items()}


def _settings(svc: Doc) -> CommonSettings:
    return load_settings(settings_for(svc["command"]), _env(svc))


def _published(svc: Doc) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of every published port."""
    published = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            published.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            parts = str(port).split(":")
            host = parts[0] if len(parts) == 3 else ""
            published.append((host, int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])))
    return published


def test_every_entry_point_runs_from_the_one_image() -> None:
    assert set(SERVICES) == INFRA | MONITORING | {"init"} | set(RUNNING)
    started = sorted(service_of(svc["command"]) or "" for svc in RUNNING.values())
    assert set(started) == entry_points()
    assert started.count("proctor-notifier") == 1, "one notifier: it judges every student"
    for svc in PROCTOR.values():
        assert svc["build"] == "."


def test_env_names_exist_in_the_settings_models() -> None:
    for name, svc in PROCTOR.items():
        known = env_names(settings_for(svc["command"]))
        used = set(_env(svc))
        assert used <= known, f"{name}: not in its settings model: {sorted(used - known)}"


def test_every_service_reaches_the_infrastructure_by_service_name() -> None:
    for name, svc in PROCTOR.items():
        settings = _settings(svc)
        assert settings.kafka.bootstrap.split(":")[0] == "kafka", name
        assert settings.redis.url.startswith("redis://redis:"), name
        assert (settings.dynamo.endpoint or "").startswith("http://dynamodb:"), name


def test_gateway_slots_are_unique_and_have_partitions() -> None:
    gateways = {n: s for n, s in RUNNING.items() if service_of(s["command"]) == "proctor-gateway"}
    assert len(gateways) == 2
    loaded = [load_settings(GatewaySettings, _env(svc)) for svc in gateways.values()]
    slots = [s.gateway.slot for s in loaded]
    assert sorted(slots) == [0, 1]
    for settings in loaded:
        assert settings.gateway.slot < settings.kafka.deliveries_partitions
    # Tokens signed once must be accepted by either gateway.
    assert len({s.gateway.token_secret for s in loaded}) == 1
    assert len(loaded[0].gateway.token_secret) >= 32


def test_published_ports_are_bound_to_loopback() -> None:
    for name, svc in SERVICES.items():
        for host, _, _ in _published(svc):
            assert host == "127.0.0.1", f"{name} publishes on {host or 'every interface'}"


def test_infrastructure_ports_match_the_settings_defaults() -> None:
    # So tests, the simulator and services on the host work unchanged against compose.
    defaults = CommonSettings()
    published = {
        name: {host_port for _, host_port, _ in _published(SERVICES[name])} for name in INFRA
    }
    assert int(defaults.kafka.bootstrap.rsplit(":", 1)[1]) in published["kafka"]
    assert int(defaults.redis.url.rsplit(":", 1)[1].split("/")[0]) in published["redis"]
    assert int((defaults.dynamo.endpoint or "").rsplit(":", 1)[1]) in published["dynamodb"]
    kafka_env = SERVICES["kafka"]["environment"]
    assert (
        f"//127.0.0.1:{defaults.kafka.bootstrap.rsplit(':', 1)[1]}"
        in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    )


def test_kafka_is_a_single_kraft_node_without_auto_created_topics() -> None:
    kafka = SERVICES["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_healthcheck_probes_readyz_where_the_service_listens(name: str) -> None:
    svc = RUNNING[name]
    settings = _settings(svc)
    host, port = listen(settings)
    assert host == "0.0.0.0", f"{name} listens on {host}: unreachable from the host"
    # A gateway publishes only its WebSocket port; its ops port stays inside.
    assert {target for _, _, target in _published(svc)} == {public_port(settings) or port}
    test = svc["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[-1] == f"http://127.0.0.1:{port}/readyz"


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_services_start_after_the_topics_and_table_exist(name: str) -> None:
    depends = RUNNING[name]["depends_on"]
    assert depends["init"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"


def test_init_creates_topics_and_table_once_kafka_is_healthy() -> None:
    init = SERVICES["init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "restart" not in init, "a restarting one-shot never completes for depends_on"
    script = init["command"][-1]
    assert "ensure_topics(settings.kafka)" in script
    assert "create_table=True" in script


async def _healthcheck(argv: list[str], port: int) -> int:
    """Run a compose healthcheck command here, aimed at ``port`` on this machine."""
    program, *args = argv
    assert program == "python"
    url = re.sub(r":\d+/", f":{port}/", args[-1])
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args[:-1], url, stderr=asyncio.subprocess.DEVNULL
    )
    async with asyncio.timeout(scaled(20)):
        return await process.wait()


async def test_healthcheck_command_passes_only_when_ready() -> None:
    # Every service uses the same probe; the ops server is the one all of them run.
    commands = {tuple(svc["healthcheck"]["test"][1:-1]) for svc in RUNNING.values()}
    assert len(commands) == 1
    argv = [*commands.pop(), "http://127.0.0.1:1/readyz"]
    ready = False
    runner = await start_ops_server(CollectorRegistry(), lambda: ready, host="127.0.0.1", port=0)
    try:
        port = int(runner.addresses[0][1])
        assert await _healthcheck(argv, port) != 0
        ready = True
        assert await _healthcheck(argv, port) == 0
    finally:
        await runner.cleanup()
    assert await _healthcheck(argv, port) != 0  # nothing listens any more


# -- monitoring and persistence ---------------------------------------------------------------


def _mounts(svc: Doc) -> dict[str, str]:
    """Container path -> source (a named volume, or a path relative to the compose file)."""
    mounts = {}
    for volume in svc.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        mounts[target] = source
    return mounts


def _mounted_file(svc: Doc, container_path: str) -> Path:
    """The repository file a service sees at ``container_path`` (a file or directory mount)."""
    for target, source in _mounts(svc).items():
        if container_path == target or container_path.startswith(target + "/"):
            assert source.startswith("./"), f"{container_path} is not from the repository"
            return REPO / source[2:] / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"nothing mounted at {container_path}")


def _flag(svc: Doc, name: str) -> str:
    [value] = [arg.split("=", 1)[1] for arg in svc["command"] if arg.startswith(f"{name}=")]
    return str(value)


def test_monitoring_images_are_pinned() -> None:
    for name in MONITORING:
        image = SERVICES[name]["image"]
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", image), f"{name}: {image}"


def test_prometheus_scrapes_every_service_where_it_listens_under_the_rules_job_names() -> None:
    prometheus = SERVICES["prometheus"]
    config = yaml_documents(_mounted_file(prometheus, _flag(prometheus, "--config.file")))[0]
    scraped = {
        job["job_name"]: {t for group in job["static_configs"] for t in group["targets"]}
        for job in config["scrape_configs"]
    }
    expected: dict[str, set[str]] = {}
    for name, svc in RUNNING.items():
        job = (service_of(svc["command"]) or "").removeprefix("proctor-")
        expected.setdefault(job, set()).add(f"{name}:{listen(_settings(svc))[1]}")
    assert {job: scraped.get(job) for job in expected} == expected
    assert set(expected) == {"gateway", "router", "status", "notifier", "lti"}
    # The alerting target and the rule files are the compose ones.
    [alertmanager] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == "alertmanager:9093"
    [rules] = config["rule_files"]
    rules_dir = _mounted_file(prometheus, rules.rsplit("/", 1)[0])
    assert sorted(rules_dir.glob(rules.rsplit("/", 1)[1])) == sorted(
        (REPO / "deploy" / "prometheus").glob("*-rules.yml")
    )


def _tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which(name)
    assert binary, f"{name} not found: scripts/bootstrap installs it from Debian"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_the_compose_prometheus_and_alertmanager_configs_are_valid() -> None:
    prometheus, alertmanager = SERVICES["prometheus"], SERVICES["alertmanager"]
    result = _tool(
        "promtool",
        "check",
        "config",
        "--syntax-only",
        str(_mounted_file(prometheus, _flag(prometheus, "--config.file"))),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = _tool(
        "amtool",
        "check-config",
        str(_mounted_file(alertmanager, _flag(alertmanager, "--config.file"))),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_with_the_prometheus_and_the_generated_dashboards() -> None:
    grafana = SERVICES["grafana"]
    provisioning = "/etc/grafana/provisioning"
    [datasources] = yaml_documents(
        _mounted_file(grafana, f"{provisioning}/datasources/prometheus.yml")
    )
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"
    assert {target for _, _, target in _published(SERVICES["prometheus"])} == {9090}
    [providers] = yaml_documents(
        _mounted_file(grafana, f"{provisioning}/dashboards/proctoring.yml")
    )
    [provider] = providers["providers"]
    dashboards = _mounted_file(grafana, provider["options"]["path"])
    assert dashboards == REPO / "deploy" / "grafana" / "dashboards"
    assert {p.stem for p in dashboards.glob("*.json")} >= {"overview", "exam-day"}
    home = _env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _mounted_file(grafana, home).is_file()


TOKEN_SECRETS = ("PROCTOR_GATEWAY__TOKEN_SECRET", "PROCTOR_LTI__TOKEN_SECRET")


def test_the_token_secret_has_no_default() -> None:
    # A well-known default key lets anyone mint tokens; compose must refuse to start instead.
    secrets = {
        (name, var): svc["environment"][var]
        for name, svc in RUNNING.items()
        for var in TOKEN_SECRETS
        if var in svc.get("environment", {})
    }
    assert {var for _, var in secrets} == set(TOKEN_SECRETS), "a service lacks the token secret"
    for name, secret in secrets.items():
        assert re.fullmatch(r"\$\{PROCTOR_TOKEN_SECRET:\?[^}]+\}", secret), name


def _lti() -> tuple[str, LtiSettings]:
    [(name, svc)] = [
        (n, s) for n, s in RUNNING.items() if service_of(s["command"]) == "proctor-lti"
    ]
    settings = _settings(svc)
    assert isinstance(settings, LtiSettings)
    return name, settings


def test_the_lti_tool_hands_over_tokens_the_gateways_accept() -> None:
    _, lti = _lti()
    for name, svc in RUNNING.items():
        if service_of(svc["command"]) == "proctor-gateway":
            gateway = load_settings(GatewaySettings, _env(svc))
            assert lti.lti.token_secret == gateway.gateway.token_secret, name
            assert lti.lti.token_issuer == gateway.gateway.token_issuer, name


def test_the_lti_tool_sends_browsers_where_compose_publishes() -> None:
    # Browsers on this machine follow the tool's redirects: its own URL (the platform's
    # redirect URI, the roster) and the gateway's pages must be the published ports.
    name, lti = _lti()
    assert lti.lti.public_url == f"http://127.0.0.1:{lti.lti.port}"
    host_ports = {port for _, port, _ in _published(SERVICES[name])}
    assert lti.lti.port in host_ports
    gateway_ports = {
        host_port
        for svc in RUNNING.values()
        if service_of(svc["command"]) == "proctor-gateway"
        for _, host_port, _ in _published(svc)
    }
    assert lti.lti.app_url.startswith("http://127.0.0.1:")
    assert int(lti.lti.app_url.rsplit(":", 1)[1]) in gateway_ports
    assert lti.lti.platforms == [], "no LMS is trusted unless the operator names it"


def test_kafka_and_dynamodb_keep_their_data_in_named_volumes() -> None:
    declared = set(_compose().get("volumes", {}))
    kafka = SERVICES["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert _mounts(kafka).get(log_dirs) in declared
    dynamodb = SERVICES["dynamodb"]
    command = dynamodb["command"]
    assert "-inMemory" not in command
    db_path = command[command.index("-dbPath") + 1]
    assert _mounts(dynamodb).get(db_path) in declared
