"""The notifier process: resources opened in order, closed in reverse.

Startup: topics -> producer -> ops server -> liveness (presence + heartbeat replay) ->
alerts (log group consumer) -> both loops run. ``stop()`` lets each loop finish its current
batch (verdicts and alerts written, offsets committed), then consumers close, the producer
flushes and stops, and the ops server goes last. A stalled log stops nothing: writes wait for
it (services/notifier/writer.py); on shutdown a loop still waiting after ``write_timeout_s``
is cancelled, and the restart redoes its work with the same event ids. A loop that fails for
any other reason stops the whole process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from adapters.kafka_clients import durable_producer
from adapters.kafka_topics import PartitionsMismatch, ensure_topics
from adapters.ops_http import start_ops_server
from services.notifier.alerts_loop import AlertsLoop
from services.notifier.errors import StartupFailed
from services.notifier.liveness_loop import LivenessLoop
from services.notifier.metrics import NotifierMetrics
from services.notifier.settings import NotifierSettings
from services.notifier.writer import Writer

log = structlog.get_logger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Notifier:
    def __init__(
        self, settings: NotifierSettings, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = NotifierMetrics(self.registry)
        self.ops_port: int | None = None
        self._stopping = asyncio.Event()
        self._liveness: LivenessLoop | None = None
        self._alerts: AlertsLoop | None = None

    def stop(self) -> None:
        self._stopping.set()

    def ready(self) -> bool:
        return (
            not self._stopping.is_set()
            and self._liveness is not None
            and self._liveness.ready
            and self._alerts is not None
            and self._alerts.caught_up
        )

    async def wait_ready(self) -> None:
        while not self.ready():
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        settings, options = self.settings, self.settings.notifier
        kafka = settings.kafka
        try:
            async with asyncio.timeout(options.startup_timeout_s):
                await ensure_topics(kafka)
        except TimeoutError as exc:
            raise StartupFailed("Kafka did not answer while checking topics") from exc
        except PartitionsMismatch as exc:
            raise StartupFailed(str(exc)) from exc
        producer = durable_producer(kafka, client_id=options.instance)
        async with asyncio.timeout(kafka.request_timeout_s):
            await producer.start()
        try:
            ops = await start_ops_server(
                self.registry, self.ready, host=options.ops_host, port=options.ops_port
            )
            try:
                self.ops_port = _bound_port(ops)
                writer = Writer(producer, self.metrics, timeout_s=options.write_timeout_s)
                liveness = self._liveness = LivenessLoop(
                    kafka, options, writer, self.metrics, now_ms
                )
                alerts = self._alerts = AlertsLoop(kafka, options, writer, self.metrics, now_ms)
                try:
                    await liveness.open()
                    await alerts.open()
                    log.info("notifier_started", instance=options.instance, ops_port=self.ops_port)
                    await self._run_loops(liveness, alerts)
                finally:
                    await alerts.close()
                    await liveness.close()
            finally:
                await ops.cleanup()
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(options.write_timeout_s):
                    await producer.flush()
            await producer.stop()
            log.info("notifier_stopped", instance=options.instance)

    async def _run_loops(self, liveness: LivenessLoop, alerts: AlertsLoop) -> None:
        tasks = [
            asyncio.create_task(liveness.run(self._stopping), name="liveness"),
            asyncio.create_task(alerts.run(self._stopping), name="alerts"),
        ]
        stopping = asyncio.create_task(self._stopping.wait(), name="stopping")
        try:
            await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            # Whatever ended first, the others finish their batch and leave, if the log lets them.
            self._stopping.set()
            await asyncio.wait(tasks, timeout=self.settings.notifier.write_timeout_s)
            for loop_task in tasks:
                if loop_task.done():
                    loop_task.result()
        finally:
            for task in [*tasks, stopping]:
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
