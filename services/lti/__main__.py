"""``proctor-lti``: the LTI 1.3 tool that LMS platforms launch students and staff through."""

from __future__ import annotations

from collections.abc import Sequence

import uvloop
from aiohttp import web

from adapters.cli import start_service
from adapters.gc_tuning import tune_gc
from services.lti.app import create_app
from services.lti.settings import LtiSettings


def main(argv: Sequence[str] | None = None) -> None:
    settings = start_service(LtiSettings, "lti", __doc__ or "", argv)
    tune_gc(settings.gc_policy())
    web.run_app(
        create_app(settings),
        host=settings.lti.host,
        port=settings.lti.port,
        # No access log: a launch's form and the hand-over's Location carry signed tokens.
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
