"""The fault suite's own infrastructure instances: Kafka, DynamoDB Local and Redis started by
``infra/stack`` under a separate directory and on separate ports. There are two: the
single-broker instance every fault but ``broker-kill`` uses, and a three-broker cluster
instance (``infra/stack`` cluster mode) for ``broker-kill``.

The suite stops, kills and flushes infrastructure processes, so it never touches the shared
instance on the default ports that other tests use: every signal goes to a pid read from this
instance's own pid files, and only after its command line has been checked to name this
instance's configuration (directory or port). Settings, all from the environment:

| variable | default |
|---|---|
| ``PROCTOR_FAULTS_LOCAL_DIR`` | ``<repo>/.local/faults`` (``cache``: symlink to ``.local/cache``) |
| ``PROCTOR_FAULTS_KAFKA_PORT`` / ``_KAFKA_CONTROLLER_PORT`` | 29092 / 29093 |
| ``PROCTOR_FAULTS_DYNAMODB_PORT`` | 28000 |
| ``PROCTOR_FAULTS_REDIS_PORT`` | 26379 |

The cluster instance (``FaultInfra.cluster_from_env``), nodes on the Kafka ports + 0, 2, 4:

| variable | default |
|---|---|
| ``PROCTOR_FAULTS_CLUSTER_LOCAL_DIR`` | ``<repo>/.local/faults-cluster`` |
| ``PROCTOR_FAULTS_CLUSTER_KAFKA_PORT`` / ``_KAFKA_CONTROLLER_PORT`` | 29192 / 29193 (29192-29197) |
| ``PROCTOR_FAULTS_CLUSTER_DYNAMODB_PORT`` | 28100 |
| ``PROCTOR_FAULTS_CLUSTER_REDIS_PORT`` | 26479 |
| ``PROCTOR_FAULTS_CLUSTER_KAFKA_HEAP_OPTS`` | ``-Xms128m -Xmx384m`` (per broker) |
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "stack"
DEFAULT_PORTS = {19092, 19093, 18000, 16379}
SINGLE_FAULT_PORTS = {29092, 29093, 28000, 26379}  # the single-broker fault instance's defaults
PORT_STEP = 2  # infra/stack cluster mode: node n on the Kafka ports + 2(n-1)

# "kafka" is the single broker; a cluster's nodes are "kafka-1" .. "kafka-3".
InfraService = Literal["kafka", "kafka-1", "kafka-2", "kafka-3", "dynamodb", "redis"]


class InfraError(RuntimeError):
    """The fault instance could not be started, or a pid is not provably ours."""


@dataclass(frozen=True)
class FaultInfra:
    local_dir: Path
    kafka_port: int
    kafka_controller_port: int
    dynamodb_port: int
    redis_port: int
    brokers: int = 1

    @classmethod
    def from_env(cls) -> FaultInfra:
        env = os.environ
        infra = cls(
            local_dir=Path(env.get("PROCTOR_FAULTS_LOCAL_DIR", str(ROOT / ".local" / "faults"))),
            kafka_port=int(env.get("PROCTOR_FAULTS_KAFKA_PORT", "29092")),
            kafka_controller_port=int(env.get("PROCTOR_FAULTS_KAFKA_CONTROLLER_PORT", "29093")),
            dynamodb_port=int(env.get("PROCTOR_FAULTS_DYNAMODB_PORT", "28000")),
            redis_port=int(env.get("PROCTOR_FAULTS_REDIS_PORT", "26379")),
        )
        shared = DEFAULT_PORTS & infra.ports
        if shared:
            raise InfraError(f"fault instance ports {sorted(shared)} are the shared stack's")
        if infra.local_dir.resolve() == (ROOT / ".local").resolve():
            raise InfraError("the fault instance needs its own PROCTOR_FAULTS_LOCAL_DIR")
        return infra

    @classmethod
    def cluster_from_env(cls) -> FaultInfra:
        """The three-broker instance: its own directory and ports, neither the shared stack's
        nor the single-broker fault instance's."""
        env = os.environ
        infra = cls(
            local_dir=Path(
                env.get("PROCTOR_FAULTS_CLUSTER_LOCAL_DIR", str(ROOT / ".local" / "faults-cluster"))
            ),
            kafka_port=int(env.get("PROCTOR_FAULTS_CLUSTER_KAFKA_PORT", "29192")),
            kafka_controller_port=int(
                env.get("PROCTOR_FAULTS_CLUSTER_KAFKA_CONTROLLER_PORT", "29193")
            ),
            dynamodb_port=int(env.get("PROCTOR_FAULTS_CLUSTER_DYNAMODB_PORT", "28100")),
            redis_port=int(env.get("PROCTOR_FAULTS_CLUSTER_REDIS_PORT", "26479")),
            brokers=3,
        )
        single = cls.from_env()
        taken = (DEFAULT_PORTS | SINGLE_FAULT_PORTS | single.ports) & infra.ports
        if taken:
            raise InfraError(
                f"fault cluster ports {sorted(taken)} are the shared stack's"
                " or the single-broker fault instance's"
            )
        if len(infra.ports) != 2 * infra.brokers + 2:
            raise InfraError(f"fault cluster ports collide among themselves: {sorted(infra.ports)}")
        if infra.local_dir.resolve() in {
            (ROOT / ".local").resolve(),
            single.local_dir.resolve(),
        }:
            raise InfraError("the fault cluster needs its own PROCTOR_FAULTS_CLUSTER_LOCAL_DIR")
        return infra

    @property
    def kafka_nodes(self) -> tuple[InfraService, ...]:
        if self.brokers == 1:
            return ("kafka",)
        return tuple(f"kafka-{n}" for n in range(1, self.brokers + 1))  # type: ignore[misc]

    @property
    def replication_factor(self) -> int:
        """What the run's topics get: 3 copies on the cluster (min ISR 2 comes with it)."""
        return 1 if self.brokers == 1 else 3

    def node_ports(self, node: int) -> tuple[int, int]:
        """Client and controller port of cluster node ``node`` (1-based)."""
        step = PORT_STEP * (node - 1)
        return self.kafka_port + step, self.kafka_controller_port + step

    @property
    def ports(self) -> set[int]:
        kafka = {p for n in range(1, self.brokers + 1) for p in self.node_ports(n)}
        return kafka | {self.dynamodb_port, self.redis_port}

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.node_ports(n)[0]}" for n in range(1, self.brokers + 1))

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def dynamodb_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.dynamodb_port}"

    def stack_env(self) -> dict[str, str]:
        if self.brokers == 1:
            heap = os.environ.get("PROCTOR_FAULTS_KAFKA_HEAP_OPTS", "-Xms128m -Xmx768m")
        else:
            heap = os.environ.get("PROCTOR_FAULTS_CLUSTER_KAFKA_HEAP_OPTS", "-Xms128m -Xmx384m")
        return {
            **os.environ,
            "PROCTOR_LOCAL_DIR": str(self.local_dir),
            "PROCTOR_KAFKA_BROKERS": str(self.brokers),
            "PROCTOR_KAFKA_PORT": str(self.kafka_port),
            "PROCTOR_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "PROCTOR_DYNAMODB_PORT": str(self.dynamodb_port),
            "PROCTOR_REDIS_PORT": str(self.redis_port),
            "PROCTOR_KAFKA_HEAP_OPTS": heap,
            "PYTHON": sys.executable,
        }

    def service_env(self) -> dict[str, str]:
        """What every proctoring service needs to use this instance instead of the shared one."""
        env = {
            "PROCTOR_KAFKA__BOOTSTRAP": self.kafka_bootstrap,
            "PROCTOR_REDIS__URL": self.redis_url,
            "PROCTOR_DYNAMO__ENDPOINT": self.dynamodb_endpoint,
        }
        if self.brokers > 1:
            env["PROCTOR_KAFKA__REPLICATION_FACTOR"] = str(self.replication_factor)
        return env

    # -- lifecycle ------------------------------------------------------------------------

    def _link_cache(self) -> None:
        """Reuse the shared instance's downloads (jars, Maven repo): none is fetched twice."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        cache = self.local_dir / "cache"
        shared = ROOT / ".local" / "cache"
        if not cache.exists() and not cache.is_symlink() and shared.is_dir():
            cache.symlink_to(os.path.relpath(shared, self.local_dir))

    def _stack(self, *args: str, timeout_s: float = 300.0) -> str:
        result = subprocess.run(
            [str(STACK), *args],
            env=self.stack_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise InfraError(
                f"infra/stack {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def up(self) -> str:
        self._link_cache()
        return self._stack("up")

    def running(self) -> bool:
        """All three services of this instance are up (``infra/stack status``)."""
        result = subprocess.run(
            [str(STACK), "status"],
            env=self.stack_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        return result.returncode == 0

    def down(self) -> str:
        return self._stack("down")

    async def up_async(self) -> str:
        return await asyncio.to_thread(self.up)

    # -- our processes only ---------------------------------------------------------------

    def pid(self, service: InfraService) -> int:
        """The pid of this instance's ``service``, checked against its command line."""
        path = self.local_dir / "run" / f"{service}.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise InfraError(f"no pid file for {service} at {path}") from exc
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError as exc:
            raise InfraError(f"{service} pid {pid} is not running") from exc
        if service.startswith("kafka"):
            marker = str(self.local_dir.resolve() / "conf" / service / "server.properties")
        else:
            marker = {
                "dynamodb": f"-port {self.dynamodb_port}",
                "redis": f"127.0.0.1:{self.redis_port}",
            }[service]
        if marker not in cmdline:
            # redis-server rewrites its title to "redis-server 127.0.0.1:<port>".
            raise InfraError(f"pid {pid} does not look like our {service} ({cmdline[:200]!r})")
        return pid

    def signal(self, service: InfraService, sig: signal.Signals) -> int:
        pid = self.pid(service)
        os.kill(pid, sig)
        return pid

    def resume_all(self) -> None:
        """SIGCONT whatever of ours might be stopped (safe to call any time, e.g. on abort)."""
        services: tuple[InfraService, ...] = (*self.kafka_nodes, "dynamodb", "redis")
        for service in services:
            try:
                self.signal(service, signal.SIGCONT)
            except (InfraError, ProcessLookupError):
                pass

    async def wait_ports_closed(self, service: InfraService, timeout_s: float = 30.0) -> None:
        """A SIGKILLed JVM's thread-group leader is a zombie before its other threads (and
        their listening sockets) are gone; ``infra/stack up`` refuses a port still open."""
        if service == "kafka":
            ports: tuple[int, ...] = (self.kafka_port, self.kafka_controller_port)
        elif service.startswith("kafka-"):
            ports = self.node_ports(int(service.removeprefix("kafka-")))
        else:
            ports = {"dynamodb": (self.dynamodb_port,), "redis": (self.redis_port,)}[service]
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any([await _accepts(port) for port in ports]):
            if asyncio.get_running_loop().time() > deadline:
                raise InfraError(f"{service} ports {ports} still open after {timeout_s}s")
            await asyncio.sleep(0.1)

    async def wait_gone(self, pid: int, timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while Path(f"/proc/{pid}").exists():
            state = _proc_state(pid)
            if state in ("Z", "X", None):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise InfraError(f"pid {pid} still alive after {timeout_s}s")
            await asyncio.sleep(0.05)


async def _accepts(port: int) -> bool:
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]
