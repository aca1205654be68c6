"""``proctor-status``: fold the exam log into the Redis snapshot and the first-attempt table."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import structlog
import uvloop

from adapters.cli import start_service
from adapters.gc_tuning import tune_gc
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
    settings = start_service(Settings, "status", __doc__ or "", argv)
    tune_gc(settings.gc_policy())
    try:
        uvloop.run(_run(settings))
    except StartupFailed as exc:
        log.error("status service could not start", error=str(exc))
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
