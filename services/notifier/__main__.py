"""``proctor-notifier``: detect disconnections and raise alerts into the exam log."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

import structlog
import uvloop

from adapters.cli import start_service
from adapters.gc_tuning import tune_gc
from services.notifier.errors import NotifierError
from services.notifier.runtime import Notifier
from services.notifier.settings import NotifierSettings

log = structlog.get_logger(__name__)


async def serve(settings: NotifierSettings) -> None:
    notifier = Notifier(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, notifier.stop)
    await notifier.run()


def main(argv: Sequence[str] | None = None) -> None:
    settings = start_service(NotifierSettings, "notifier", __doc__ or "", argv)
    tune_gc(settings.gc_policy())
    try:
        uvloop.run(serve(settings))
    except NotifierError as exc:
        # Exit non-zero so the supervisor restarts it; the restart redoes the lost work.
        log.error("notifier_failed", error=str(exc))
        sys.exit(1)


if __name__ == "__main__":
    main()
