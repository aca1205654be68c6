"""The flat view of a settings class: one ``PROCTOR_*`` variable per leaf field.

Operators configure the services through environment variables, so both the command line's
``--print-settings`` and the generated reference (``docs/settings.md``) speak in those names
rather than in nested model paths. Secrets are masked here, in the one place both go through.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PREFIX = "PROCTOR_"
MASK = "********"
# Defaults that are prose rather than a value one could set.
GENERATED = "generated at start"
REQUIRED = "required"
DEVELOPMENT_SECRET = "a development value: set it"

# By name, not only by marking, so a secret someone adds later is masked without their help.
_SECRET_NAME = re.compile(r"secret|password|passwd|credential|private_key|api_key", re.IGNORECASE)


@dataclass(frozen=True)
class Setting:
    env: str
    path: tuple[str, ...]
    type: str
    default: str
    description: str
    secret: bool


def env_name(path: tuple[str, ...] | list[str]) -> str:
    return PREFIX + "__".join(part.upper() for part in path)


def is_secret(name: str, field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    marked = isinstance(extra, dict) and extra.get("secret") is True
    return marked or field.annotation is SecretStr or bool(_SECRET_NAME.search(name))


def settings_of(model: type[BaseModel]) -> list[Setting]:
    """Every leaf field of ``model`` with its variable name, type, default and meaning."""
    return list(_walk(model, ()))


def _walk(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[Setting]:
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        nested = _model_type(field.annotation)
        if nested is not None:
            yield from _walk(nested, path)
            continue
        secret = is_secret(name, field)
        yield Setting(
            env=env_name(path),
            path=path,
            type=_type_name(field.annotation),
            default=_default_text(field, secret),
            description=field.description or "",
            secret=secret,
        )


def effective_values(settings: BaseModel) -> list[tuple[Setting, str]]:
    """Each setting beside the value in effect, as it would be written in the environment."""
    rows = []
    for setting in settings_of(type(settings)):
        value: Any = settings
        for part in setting.path:
            value = getattr(value, part)
        rows.append((setting, display(value, secret=setting.secret)))
    return rows


def display(value: Any, *, secret: bool = False) -> str:
    """The value as an environment variable would spell it (``null``: None), secrets masked."""
    if secret:
        return MASK
    if isinstance(value, SecretStr):
        return MASK
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str | int | float | Path):
        return _without_password(str(value))
    return _without_password(json.dumps(value, default=str, sort_keys=True))


def _without_password(text: str) -> str:
    # A URL may carry credentials (redis://:password@host): keep the rest, mask the password.
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}{port}"))
    except ValueError:
        return MASK


def _model_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(str(choice) for choice in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(
            "null" if arg is type(None) else _type_name(arg) for arg in typing.get_args(annotation)
        )
    if isinstance(annotation, type):
        return {"str": "string", "Path": "path", "SecretStr": "string"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default_text(field: FieldInfo, secret: bool) -> str:
    if field.default_factory is not None:
        return GENERATED
    if field.default is PydanticUndefined:
        return REQUIRED
    if secret and field.default is not None:
        return DEVELOPMENT_SECRET
    value = field.default  # an unset secret (None) has nothing to hide
    if isinstance(value, Path):
        return _repo_relative(value)
    return display(value)


def _repo_relative(path: Path) -> str:
    # The reference is committed: a checkout's absolute path would differ on every machine.
    root = Path(__file__).resolve().parents[1]
    try:
        return f"<repository>/{path.resolve().relative_to(root)}"
    except ValueError:
        return str(path)
