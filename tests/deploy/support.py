"""What the deployment tests share: the repo's files, the services' settings models, and how
a container's environment turns into the settings the service would run with.

The settings models are the source of truth: an environment variable in a manifest that no
model declares is a typo the service would silently ignore (``extra="ignore"``).
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import yaml
from pydantic import BaseModel

from adapters.settings import CommonSettings
from services.gateway.settings import GatewaySettings
from services.lti.settings import LtiSettings
from services.notifier.settings import NotifierSettings
from services.router.settings import RouterSettings
from services.status.settings import Settings as StatusSettings

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "k8s"
# The plain manifests the overlays (k8s/overlays/) build on.
K8S_BASE = K8S_DIR / "base"
# An older minor still common on managed clusters, and the newest the validator bundles.
KUBERNETES_VERSIONS = ("1.31", "1.37")
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

Doc = dict[str, Any]
S = TypeVar("S", bound=CommonSettings)

# Entry point -> the settings model that process reads.
SERVICE_SETTINGS: dict[str, type[CommonSettings]] = {
    "proctor-gateway": GatewaySettings,
    "proctor-router": RouterSettings,
    "proctor-status": StatusSettings,
    "proctor-notifier": NotifierSettings,
    "proctor-lti": LtiSettings,
}

PROCTOR_NAME = re.compile(r"\bPROCTOR_[A-Z0-9_]+\b")


def entry_points() -> set[str]:
    """The long-running services' commands (tools such as ``proctor-audit`` are not deployed)."""
    with (REPO / "pyproject.toml").open("rb") as file:
        scripts: dict[str, str] = tomllib.load(file)["project"]["scripts"]
    return {name for name, target in scripts.items() if target.startswith("services.")}


def env_names(settings: type[CommonSettings]) -> set[str]:
    """Every environment variable that sets a leaf of ``settings``."""
    config = settings.model_config
    prefix = str(config.get("env_prefix", ""))
    delimiter = str(config.get("env_nested_delimiter", ""))
    return _leaf_names(settings, prefix.upper(), delimiter)


def _leaf_names(model: type[BaseModel], prefix: str, delimiter: str) -> set[str]:
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        nested = list(_models_in(field.annotation))
        if nested and delimiter:
            for sub in nested:
                names |= _leaf_names(sub, f"{name}{delimiter}", delimiter)
        else:
            names.add(name)
    return names


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The models a field holds itself (``Model``, ``Model | None``): set leaf by leaf with the
    delimiter. A model inside a list or dict (``PROCTOR_LTI__PLATFORMS``) is one variable, a
    JSON value, like any other container."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models_in(arg)


def service_of(command: list[str]) -> str | None:
    """The entry point a container command starts: the command itself, or the program a
    shell wrapper ``exec``s; None for anything else (the init one-shot)."""
    text = " ".join(command)
    started = [script for script in SERVICE_SETTINGS if re.search(rf"(^|exec\s+){script}\b", text)]
    assert len(started) <= 1, f"one command starts several services: {command}"
    return started[0] if started else None


def settings_for(command: list[str]) -> type[CommonSettings]:
    """The settings model the process of ``command`` reads (shared settings only if none)."""
    service = service_of(command)
    return SERVICE_SETTINGS[service] if service else CommonSettings


def load_settings(settings: type[S], env: Mapping[str, str]) -> S:
    """The settings a process would build with exactly ``env`` as its PROCTOR_ variables."""
    outside = {k: v for k, v in os.environ.items() if not k.upper().startswith("PROCTOR_")}
    with mock.patch.dict(os.environ, {**outside, **env}, clear=True):
        return settings()


def listen(settings: CommonSettings) -> tuple[str, int]:
    """Where the process serves /healthz /readyz /metrics."""
    if isinstance(settings, GatewaySettings):
        options = settings.gateway
        if options.ops_port is None:
            return options.host, options.port
        return options.ops_host, options.ops_port
    if isinstance(settings, RouterSettings):
        return settings.router.ops_host, settings.router.ops_port
    if isinstance(settings, StatusSettings):
        return settings.status.ops_host, settings.status.ops_port
    if isinstance(settings, NotifierSettings):
        return settings.notifier.ops_host, settings.notifier.ops_port
    if isinstance(settings, LtiSettings):
        # The tool's routes are all under /lti/, its ops routes beside them on the same port.
        return settings.lti.host, settings.lti.port
    raise AssertionError(f"{type(settings).__name__} serves no ops endpoints")


def public_port(settings: CommonSettings) -> int | None:
    """The port clients connect to (the gateway's WebSocket), when it is not the ops port."""
    if isinstance(settings, GatewaySettings) and settings.gateway.ops_port is not None:
        return settings.gateway.port
    return None


def yaml_documents(path: Path) -> list[Doc]:
    with path.open() as file:
        docs = [doc for doc in yaml.safe_load_all(file) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
    return docs


def dockerfile_instruction(instruction: str) -> str:
    """The argument of the last ``instruction`` in the Dockerfile (the runtime stage's), with
    ``${ARG}`` references replaced by the ARG defaults."""
    args: dict[str, str] = {}
    found: str | None = None
    for line in DOCKERFILE.read_text().splitlines():
        keyword, _, rest = line.partition(" ")
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.strip().partition("=")
            args[name] = default
        elif keyword == instruction:
            found = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.strip())
    assert found is not None, f"no {instruction} in the Dockerfile"
    return found


_UNITS = {
    "m": 0.001,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (the forms these manifests use) as a number."""
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi)?", str(value))
    assert match, f"unsupported quantity {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2) or ""]
