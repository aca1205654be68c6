"""``proctor-router``: route exam log events to the gateways that host their recipients."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import structlog
import uvloop

from adapters.cli import start_service
from adapters.gc_tuning import tune_gc
from services.router.errors import RouterError
from services.router.service import RouterService
from services.router.settings import RouterSettings

log = structlog.get_logger("router")


async def _run(settings: RouterSettings) -> None:
    service = RouterService(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        # A signal during start-up (presence catch-up can take a while) stops it too.
        starting = asyncio.ensure_future(service.start())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.wait([starting])  # let it unwind before stopping what it opened
            log.info("stopped during start-up")
            return
        starting.result()
        running = asyncio.ensure_future(service.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            running.result()  # raises what made the router fail
        else:
            running.cancel()
    finally:
        stopping.cancel()
        await service.stop()


def _quiet_faust(level: str) -> None:
    # Faust and mode log every start and stop of each of their services at INFO.
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    settings = start_service(RouterSettings, "router", __doc__ or "", argv)
    tune_gc(settings.gc_policy())
    _quiet_faust(settings.log_level)
    # A policy rather than uvloop.run: Faust's consumer runs its own loop in a thread, and
    # that loop should be uvloop too.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(_run(settings))
    except RouterError as exc:
        log.error("router failed", error=str(exc))
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
