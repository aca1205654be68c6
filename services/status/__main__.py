"""``proctor-status``: fold the exam log into the Redis snapshot and the first-attempt table."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import structlog
import uvloop

from adapters.cli import service_settings
from adapters.gc_tuning import tune_gc
from adapters.logs import configure_logging
from services.status.errors import StartupFailed
from services.status.service import StatusService
from services.status.settings import Settings

log = structlog.get_logger("status")


async def _run(settings: Settings) -> None:
    service = StatusService(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    await service.run()
    log.info("status service stopped")


def main(argv: Sequence[str] | None = None) -> None:
    settings = service_settings(
        Settings,
        prog="proctor-status",
        description=__doc__ or "",
        own_prefix="PROCTOR_STATUS__",
        argv=argv,
    )
    configure_logging(settings.log_level, json=settings.log_json, service="status")
    tune_gc(settings.gc_gen0_threshold)
    try:
        uvloop.run(_run(settings))
    except StartupFailed as exc:
        log.error("status service could not start", error=str(exc))
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
