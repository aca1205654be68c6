"""``proctor-gateway``: run one gateway process."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import uvloop
from aiohttp import web

from adapters.cli import start_service
from adapters.gc_tuning import tune_gc
from services.gateway.app import create_app, server_options
from services.gateway.settings import GatewaySettings


def main(argv: Sequence[str] | None = None) -> None:
    settings = start_service(GatewaySettings, "gateway", __doc__ or "", argv)
    options = settings.gateway
    ssl_context = None
    if options.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(options.tls_cert, options.tls_key)
    tune_gc(settings.gc_policy())  # before the app: its metrics observe the collector
    app = create_app(settings)
    web.run_app(
        app,
        host=options.host,
        port=options.port,
        ssl_context=ssl_context,
        shutdown_timeout=options.shutdown_grace_s,
        # No access log: connections are logged by the gateway (connected, disconnected,
        # refused, with exam and attempt), and a line per request would carry the token.
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
        **server_options(options),
    )


if __name__ == "__main__":
    main()
