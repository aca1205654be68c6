"""The command line every service shares: ``--help``, ``--version``, ``--print-settings``.

Settings come from ``PROCTOR_*`` environment variables only, not from flags: a secret on the
command line is readable by every user of the machine (``ps``, ``/proc/<pid>/cmdline``),
and the deployments (compose, k8s) configure through the environment already. So the command
line only answers questions about the tool and its configuration, then either exits or
returns the validated settings to run with.
"""

from __future__ import annotations

import argparse
import platform
import sys
import textwrap
from collections.abc import Sequence
from importlib import metadata
from typing import TextIO, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from adapters.logs import configure_logging
from adapters.settings import CommonSettings
from adapters.settings_fields import effective_values, env_name, settings_of

S = TypeVar("S", bound=BaseSettings)

DISTRIBUTION = "exam-proctoring"
EXIT_USAGE = 2


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


C = TypeVar("C", bound=CommonSettings)


def start_service(settings_cls: type[C], service: str, doc: str, argv: Sequence[str] | None) -> C:
    """The command line of ``proctor-<service>`` (see ``service_settings``), then its logging:
    the settings to run with, everything a service's ``main`` does before it starts."""
    settings = service_settings(
        settings_cls,
        prog=f"proctor-{service}",
        description=doc,
        own_prefix=f"PROCTOR_{service.upper()}__",
        argv=argv,
    )
    configure_logging(settings.log_level, json=settings.log_json, service=service)
    return settings


def service_settings(
    settings_cls: type[S],
    *,
    prog: str,
    description: str,
    own_prefix: str,
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
) -> S:
    """Answer ``--help``/``--version``/``--print-settings`` (exiting 0), refuse unknown
    arguments and invalid settings (exiting 2), else return the settings to run with.

    ``own_prefix`` (e.g. ``PROCTOR_GATEWAY__``) picks the variables the help lists.
    """
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog=prog,
        description=plain_text(description),
        epilog=_epilog(settings_cls, own_prefix),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{prog} {version()} (Python {platform.python_version()})",
    )
    parser.add_argument(
        "--print-settings",
        action="store_true",
        help=(
            "print the settings in effect (environment over defaults) as PROCTOR_* lines,"
            " secrets masked, and exit; exits 2 if they are invalid"
        ),
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_cls()
    except ValidationError as exc:
        print(f"{prog}: invalid settings", file=sys.stderr)
        for line in describe_errors(exc):
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if args.print_settings:
        print_settings(settings, out)
        raise SystemExit(0)
    return settings


def print_settings(settings: BaseSettings, out: TextIO) -> None:
    for setting, value in effective_values(settings):
        out.write(f"{setting.env}={value}\n")


def describe_errors(exc: ValidationError) -> list[str]:
    """Each problem under the variable that caused it, never echoing the offending value
    (it may be a secret)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        path = [str(part) for part in error["loc"]]
        lines.append(f"{env_name(path)}: {error['msg']}")
    return lines


def plain_text(docstring: str) -> str:
    """A module docstring's first paragraph as terminal text: reST literals lose their
    backquotes, which ``--help`` would otherwise print as they are."""
    first = docstring.strip().split("\n\n")[0]
    return " ".join(first.replace("``", "").split())


def _epilog(settings_cls: type[BaseSettings], own_prefix: str) -> str:
    own = [s for s in settings_of(settings_cls) if s.env.startswith(own_prefix)]
    lines = [
        "Configured by environment variables only: PROCTOR_ prefix, __ between levels.",
        "The shared ones (PROCTOR_KAFKA__*, PROCTOR_REDIS__*, PROCTOR_DYNAMO__*, PROCTOR_LOG_*,",
        "PROCTOR_GC_GEN0_THRESHOLD) and every default and meaning: docs/settings.md.",
        "This one's own:",
        "",
    ]
    for setting in own:
        lines.append(f"  {setting.env} (default: {setting.default})")
        if setting.description:
            indent = " " * 6
            lines.extend(
                textwrap.wrap(
                    setting.description, 92, initial_indent=indent, subsequent_indent=indent
                )
            )
    return "\n".join(lines)
