"""Custom resources (Strimzi, Gateway API) validated offline against the ``openAPIV3Schema`` of
their CustomResourceDefinitions in tests/deploy/schemas/ (README.md there: sources, versions).

Strict, like ``kubectl apply``'s server-side field validation: an object schema that lists its
properties gets ``additionalProperties: false`` unless it keeps unknown fields
(``x-kubernetes-preserve-unknown-fields``), so a misspelt field fails instead of being pruned.
Not checked: CEL rules (``x-kubernetes-validations``) and defaults. ``metadata`` is checked
with kubernetes-validate's ObjectMeta.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

from tests.deploy.support import Doc

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"

# (apiVersion, kind) -> a validator of that version's schema.
Validators = dict[tuple[str, str], Any]


class CustomResourceError(AssertionError):
    """A custom resource its CRD's schema rejects (the message lists every error)."""


def _strict(schema: Any) -> Any:
    """``schema`` with unknown properties refused wherever it lists the known ones.

    Only along properties, items and additionalProperties: the branches of allOf, anyOf,
    oneOf and not restate constraints on fields declared beside them (structural schemas),
    and closing them would refuse the fields they do not repeat.
    """
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    properties = node.get("properties")
    if isinstance(properties, dict):
        node["properties"] = {name: _strict(sub) for name, sub in properties.items()}
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            node["additionalProperties"] = False
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _strict(node["additionalProperties"])
    return node


def _crds() -> Iterator[Doc]:
    for path in sorted(SCHEMAS_DIR.rglob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                yield doc


@functools.cache
def validators() -> Validators:
    found: Validators = {}
    for crd in _crds():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                # OpenAPI 3.0 schemas: draft 4 semantics (boolean exclusiveMinimum etc.).
                found[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
    return found


def is_custom(doc: Doc) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in validators()


def validate(doc: Doc, kubernetes_version: str) -> None:
    """Raise CustomResourceError unless ``doc`` is valid for its CRD (and its metadata for
    ``kubernetes_version``'s ObjectMeta)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    validator = validators().get(key)  # type: ignore[arg-type]
    if validator is None:
        raise CustomResourceError(f"no CRD schema for {key} in {SCHEMAS_DIR}")
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    name = f"{doc['kind']}/{doc.get('metadata', {}).get('name')}"
    if errors:
        lines = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise CustomResourceError(f"{name} ({doc['apiVersion']}):\n  " + "\n  ".join(lines))
    # Any kind carries ObjectMeta: check it as a ConfigMap's (labels, annotations, typos).
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": copy.deepcopy(doc["metadata"])}
    try:
        kubernetes_validate.validate(probe, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise CustomResourceError(f"{name}: metadata: {exc}") from None
