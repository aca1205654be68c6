"""structlog configuration shared by the services.

Everything a process logs leaves through one handler on the standard library's root logger,
rendered by structlog's ``ProcessorFormatter``: the services' own structlog events and the
libraries' ``logging`` records (aiokafka, aiohttp, faust, botocore, asyncio, warnings) alike.
So with ``PROCTOR_LOG_JSON=true`` every line is one JSON object with a timestamp, level,
logger name and the service's name, whoever wrote it, and a log collector needs no second
parser for library lines.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger


def configure_logging(
    level: str = "INFO",
    *,
    json: bool = False,
    service: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) through one formatter.

    ``service`` goes into every line, so lines of several services merged by a collector (or
    one terminal) still say whose they are.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service is not None:
        shared.append(_ServiceName(service))
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
        finish: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        # Plain tracebacks: the default (rich) shows each frame's locals, settings and their
        # secrets among them.
        finish = [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _one_line_event],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    sys.excepthook = _log_uncaught


class _ServiceName:
    def __init__(self, service: str) -> None:
        self._service = service

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", self._service)
        return event_dict


def _one_line_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # warnings' messages end in a newline, which would split a console line.
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = event.rstrip()
    return event_dict


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    # A crash's traceback is a log line too, or a JSON collector would get it in pieces.
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("crash").critical("uncaught_exception", exc_info=(kind, error, trace))
