"""Run the four services as separate processes, as production does, for the demo and e2e tests.

Every process gets the same shared settings through ``PROCTOR_*`` environment variables,
its own ops port, and a log file. ``Cluster`` can stop (SIGTERM), kill (SIGKILL) and
restart any of them, which is what the failure tests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the service gets SIGTERM if the launcher dies, so no orphans outlive a test."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    name: str
    module: str
    env: dict[str, str]
    ops_port: int
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}"


@dataclass
class Cluster:
    """Gateways (one per slot), routers, status services and notifiers (``replicas`` of each)
    on one shared configuration."""

    env: dict[str, str]
    log_dir: Path
    gateway_slots: tuple[int, ...] = (0, 1)
    # Instances of router, status and notifier each: the first are "router", "status",
    # "notifier", the others "router-1" and so on, in the same groups (they share the work).
    replicas: int = 1
    ready_timeout_s: float = 60.0
    gateway_ports: dict[int, int] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for slot in self.gateway_slots:
            port = self.gateway_ports.get(slot) or free_port()
            self._add(
                f"gateway-{slot}",
                "services.gateway",
                port,
                {"PROCTOR_GATEWAY__SLOT": str(slot), "PROCTOR_GATEWAY__PORT": str(port)},
            )
        for n in range(self.replicas):
            for service in ("router", "status", "notifier"):
                port = free_port()
                extra = {f"PROCTOR_{service.upper()}__OPS_PORT": str(port)}
                if service == "router":
                    # A Faust worker's tables live here: one directory per worker.
                    extra["PROCTOR_ROUTER__DATA_DIR"] = str(self.log_dir / f"router-{n}-data")
                self._add(
                    service if n == 0 else f"{service}-{n}", f"services.{service}", port, extra
                )

    def add(self, name: str, module: str, port: int, extra: dict[str, str]) -> None:
        """One more service on the shared configuration, ready when ``/readyz`` on ``port``
        answers (the LTI tool, say)."""
        self._add(name, module, port, extra)

    def _add(self, name: str, module: str, port: int, extra: dict[str, str]) -> None:
        self.services[name] = Service(
            name, module, {**self.env, **extra}, port, self.log_dir / f"{name}.log"
        )

    def gateway_url(self, slot: int) -> str:
        return f"ws://127.0.0.1:{self.services[f'gateway-{slot}'].ops_port}/ws"

    async def start(self, *names: str) -> None:
        chosen = names or tuple(self.services)
        for name in chosen:
            await self._spawn(self.services[name])
        await asyncio.gather(*(self.wait_ready(name) for name in chosen))

    async def _spawn(self, service: Service) -> None:
        log = service.log_path.open("ab")
        try:
            service.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                service.module,
                env={**os.environ, **service.env},
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    async def wait_ready(self, name: str) -> None:
        service = self.services[name]
        async with aiohttp.ClientSession() as http:
            try:
                async with asyncio.timeout(self.ready_timeout_s):
                    while True:
                        process = service.process
                        if process is not None and process.returncode is not None:
                            raise RuntimeError(f"{name} exited: {self.tail(name)}")
                        with contextlib.suppress(aiohttp.ClientError):
                            async with http.get(f"{service.ops_url}/readyz") as response:
                                if response.status == 200:
                                    return
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise RuntimeError(f"{name} not ready: {self.tail(name)}") from None

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.services[name].log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, name: str, *, timeout_s: float = 15.0) -> None:
        await self._signal(name, signal.SIGTERM, timeout_s)

    async def kill(self, name: str) -> None:
        await self._signal(name, signal.SIGKILL, 5.0)

    async def restart(self, name: str) -> None:
        await self.stop(name)
        await self.start(name)

    async def _signal(self, name: str, sig: signal.Signals, timeout_s: float) -> None:
        process = self.services[name].process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            async with asyncio.timeout(timeout_s):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def stop_all(self) -> None:
        # Gateways first so students' closes are recorded while the rest still runs.
        order = [n for n in self.services if n.startswith("gateway")] + [
            n for n in ("router", "status", "notifier") if n in self.services
        ]
        for name in order:
            await self.stop(name)
