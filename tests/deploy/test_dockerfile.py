"""The Dockerfile, read as text (no Docker here): one slim non-root image for every
service, built from the lock without dev tools, with container-ready listen settings."""

from __future__ import annotations

import json
import shlex
import subprocess

from tests.deploy.support import (
    DOCKERFILE,
    DOCKERIGNORE,
    SERVICE_SETTINGS,
    entry_points,
    env_names,
    listen,
    load_settings,
)


def _instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    parsed = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword, rest.strip()))
    return parsed


def _all(keyword: str) -> list[str]:
    return [rest for kw, rest in _instructions() if kw == keyword]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in _all("ENV"):
        for pair in shlex.split(rest):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def test_both_stages_start_from_python_311_slim() -> None:
    assert "PYTHON_IMAGE=python:3.11-slim" in _all("ARG")
    froms = _all("FROM")
    assert len(froms) == 2
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_runs_as_a_non_root_user() -> None:
    (user,) = _all("USER")
    assert "PROCTOR_UID=10001" in _all("ARG")
    assert user == "${PROCTOR_UID}:${PROCTOR_UID}"


def test_installs_the_locked_runtime_dependencies_only() -> None:
    installs = [r for r in _all("RUN") if "pip install" in r]
    assert len(installs) == 2
    for install in installs:
        assert "-c requirements.lock ." in install
        assert "[" not in install, "no extras: test and typing tools stay out of the image"
        assert " -e " not in install, "a regular install: the code lives in site-packages"
    # The built image imports every service from site-packages, not from the sources.
    (check,) = [r for r in _all("RUN") if "import services" in r]
    for script in entry_points():
        assert f"services.{script.removeprefix('proctor-')}.__main__" in check


def test_copies_only_what_the_dockerignore_lets_through() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    # Every token of a COPY but the last (the destination) is a source in the context.
    sources = {
        src for rest in _all("COPY") if not rest.startswith("--from") for src in rest.split()[:-1]
    }
    assert sources <= allowed, sorted(sources - allowed)
    assert {"schemas", "domain", "adapters", "services", "simulator"} <= sources


def test_image_env_makes_every_service_reachable_on_an_exposed_port() -> None:
    env = {k: v for k, v in _image_env().items() if k.startswith("PROCTOR_")}
    known = set().union(*(env_names(s) for s in SERVICE_SETTINGS.values()))
    assert set(env) <= known, sorted(set(env) - known)
    (exposed,) = _all("EXPOSE")
    ports = set()
    for script, settings in SERVICE_SETTINGS.items():
        host, port = listen(load_settings(settings, env))
        assert host == "0.0.0.0", script
        ports.add(port)
    assert {int(p) for p in exposed.split()} == ports


def test_a_container_without_a_command_exits_instead_of_becoming_a_gateway() -> None:
    (cmd,) = _all("CMD")
    argv = json.loads(cmd)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 64
    assert "choose a command" in result.stderr
    for script in entry_points():
        assert script in result.stderr
    assert "exec" not in argv[-1]
