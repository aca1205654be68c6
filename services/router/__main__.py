"""``proctor-router``: route exam log events to the gateways that host their recipients."""

from __future__ import annotations

import asyncio
import signal

import structlog
import uvloop

from adapters.logs import configure_logging
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
    try:
        await service.start()
        waiting = asyncio.ensure_future(service.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if waiting.done():
            waiting.result()  # raises what made the router fail
        else:
            waiting.cancel()
    finally:
        await service.stop()


def main() -> None:
    settings = RouterSettings()
    configure_logging(settings.log_level, json=settings.log_json)
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
