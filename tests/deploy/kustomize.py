"""kustomize for the deploy tests: found (PATH, ``$KUSTOMIZE``, ``~/go/bin``, the repo's
``.local/bin``) or installed with ``go install`` into ``.local/bin``; never skipped. A missing
kustomize with no Go to build it fails the tests that need it, saying what to install."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import REPO, Doc

VERSION = "v5.7.1"
MODULE = f"sigs.k8s.io/kustomize/kustomize/v5@{VERSION}"
LOCAL_BIN = REPO / ".local" / "bin"
# Building kustomize from source takes minutes on a small machine: the tests that may have to
# wait for it get this timeout instead of the suite's default.
INSTALL_TIMEOUT_S = 900
GO_DEFAULTS = (Path("/usr/local/go/bin/go"), Path.home() / "go" / "bin" / "go")


def _candidates() -> list[Path]:
    found = [os.environ.get("KUSTOMIZE"), shutil.which("kustomize")]
    paths = [Path(p) for p in found if p]
    return [*paths, Path.home() / "go" / "bin" / "kustomize", LOCAL_BIN / "kustomize"]


def _version(binary: Path) -> str:
    result = subprocess.run(
        [str(binary), "version"], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()


def _install() -> Path:
    go = shutil.which("go") or next((str(p) for p in GO_DEFAULTS if p.is_file()), None)
    if go is None:
        pytest.fail(
            f"kustomize not found (PATH, $KUSTOMIZE, ~/go/bin, {LOCAL_BIN}) and no Go to build it:"
            f" install kustomize {VERSION} (https://kubectl.docs.kubernetes.io/installation/"
            f"kustomize/) or Go, then rerun",
            pytrace=False,
        )
    LOCAL_BIN.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(LOCAL_BIN)}
    result = subprocess.run(
        [go, "install", MODULE],
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S - 60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"go install {MODULE} failed:\n{result.stderr}", pytrace=False)
    return LOCAL_BIN / "kustomize"


@functools.cache
def binary() -> Path:
    """A kustomize v5: the first one found, else one installed now."""
    for candidate in _candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            break
    else:
        candidate = _install()
    version = _version(candidate)
    assert version.startswith("v5."), f"{candidate} is kustomize {version}; need v5 ({VERSION})"
    return candidate


@functools.cache
def _build(path: Path) -> tuple[Doc, ...]:
    result = subprocess.run(
        [str(binary()), "build", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize build {path} failed:\n{result.stderr}"
    docs = [doc for doc in yaml.load_all(result.stdout, Loader=yaml.CSafeLoader) if doc]
    assert docs, f"kustomize build {path} rendered nothing"
    return tuple(docs)


def build(path: Path) -> list[Doc]:
    """What ``kubectl apply -k path`` would send, as documents (fresh copies: tests may edit)."""
    return copy.deepcopy(list(_build(path.resolve())))
