"""The seed paper's design (``../shared/peers/seed-design/``) as a benchmark target.

The peer stays where it is (``server.js`` is read from the shared folder, never copied into
this repository); its npm dependencies are installed into ``.local/peer-seed/`` (not
committed) and reach it through ``NODE_PATH``::

    mkdir -p .local/peer-seed && cp ../shared/peers/seed-design/package.json .local/peer-seed/
    (cd .local/peer-seed && npm install --no-audit --no-fund)

``ensure_deps()`` does the same (about a second) when they are missing. ``PeerServer``
starts the peer as the simulator's own processes: a ``redis-server`` on a free loopback
port, then ``node server.js PORT WORKERS REDIS_PORT`` in a new process group (the cluster
primary and its workers), and stops exactly those, by pid and by that group.

The peer's protocol (its README): students send
``{"message":{"data":{"quiz_id":Q,...}}}`` on ``/?role=student&quiz_id=Q``; proctors on
``/?role=proctor&quiz_id=Q`` receive ``{"action":"lmsQuizMonitoringStudent","data":{...}}``
with the student's ``data`` unchanged, so the send time and seq travel inside it. Nothing is
acknowledged and there are no heartbeats.

Node's cluster primary hands connections to workers round-robin; the port is shared, so a
client cannot ask for a worker. ``worker_of_ports`` finds which worker holds each client's
connection from ``/proc`` (the server side of the TCP connection is a socket in exactly one
worker's fd table), so the load generator can place students and proctors on the worker the
schedule says (reconnecting the ones that landed on the other worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from simulator.accounting import Receipt
from simulator.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = Path(
    os.environ.get("PROCTOR_SEED_PEER_DIR", ROOT.parent / "shared" / "peers" / "seed-design")
)
DEPS_DIR = ROOT / ".local" / "peer-seed"
DELIVERY_ACTION = "lmsQuizMonitoringStudent"
_TCP_ESTABLISHED = "01"


def wall_us() -> int:
    return time.time_ns() // 1000


# -- the wire protocol (pure) -----------------------------------------------------------------


def student_url(base: str, quiz: str) -> str:
    return f"{base}/?role=student&quiz_id={quiz}"


def proctor_url(base: str, quiz: str) -> str:
    return f"{base}/?role=proctor&quiz_id={quiz}"


def student_frame(
    quiz: str, student: str, seq: int, sent_us: int, kind: str, fields: dict[str, Any]
) -> bytes:
    """One update as the peer expects it; ``seq`` and the send time travel in ``data``."""
    data = {"quiz_id": quiz, "student": student, "seq": seq, "ts_us": sent_us, "type": kind}
    return orjson.dumps({"message": {"data": {**fields, **data}}})


def parse_delivery(raw: str | bytes, at_us: int) -> Receipt | None:
    """A proctor's frame as a receipt (times in microseconds), or None when it is anything
    but a delivery of a student's update carrying this simulator's ``student`` and ``seq``."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(frame, dict) or frame.get("action") != DELIVERY_ACTION:
        return None
    data = frame.get("data")
    if not isinstance(data, dict):
        return None
    student, seq = data.get("student"), data.get("seq")
    if not isinstance(student, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    # The peer has no server-side sequence: the student's seq orders rows; it stamps nothing.
    return Receipt(student, seq, seq, at_us, 0)


# -- which worker holds a connection (/proc) --------------------------------------------------


def parse_proc_net_tcp(text: str, server_port: int) -> dict[int, int]:
    """From ``/proc/net/tcp``: the socket inode of every established connection whose local
    port is ``server_port``, by the remote (client) port."""
    found: dict[int, int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_ESTABLISHED:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port != server_port:
            continue
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        found[remote_port] = int(fields[9])
    return found


def parse_socket_link(link: str) -> int | None:
    """``socket:[12345]`` -> 12345; anything else (files, pipes) -> None."""
    if link.startswith("socket:[") and link.endswith("]"):
        return int(link[8:-1])
    return None


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for entry in os.scandir(fd_dir):
            with contextlib.suppress(OSError):
                inode = parse_socket_link(os.readlink(entry.path))
                if inode is not None:
                    inodes.add(inode)
    return inodes


def assign_workers(client_inodes: dict[int, int], worker_inodes: list[set[int]]) -> dict[int, int]:
    """client port -> index of the worker whose fd table holds that connection's socket."""
    owner = {inode: n for n, inodes in enumerate(worker_inodes) for inode in inodes}
    return {port: owner[inode] for port, inode in client_inodes.items() if inode in owner}


def worker_of_ports(server_port: int, worker_pids: list[int]) -> dict[int, int]:
    """client port -> worker index, for every connection to the peer right now."""
    table = ""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            table += Path(name).read_text()
    return assign_workers(
        parse_proc_net_tcp(table, server_port), [socket_inodes(pid) for pid in worker_pids]
    )


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] != "Z"


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (from /proc/*/stat), oldest first."""
    children: list[tuple[int, int]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(f"/proc/{entry.name}/stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            if int(fields[1]) == parent:
                children.append((int(fields[19]), int(entry.name)))  # start time, pid
    return [pid for _, pid in sorted(children)]


# -- the server: its own redis-server and node cluster ----------------------------------------


def ensure_deps(peer_dir: Path = PEER_DIR, deps_dir: Path = DEPS_DIR) -> Path:
    """The peer's npm dependencies in ``deps_dir/node_modules`` (installed when missing or
    when the peer's package.json changed); returns that folder for ``NODE_PATH``."""
    source = peer_dir / "package.json"
    if not (peer_dir / "server.js").is_file() or not source.is_file():
        raise FileNotFoundError(
            f"the seed design peer is not at {peer_dir} (set PROCTOR_SEED_PEER_DIR)"
        )
    deps_dir.mkdir(parents=True, exist_ok=True)
    target = deps_dir / "package.json"
    modules = deps_dir / "node_modules"
    fresh = target.is_file() and target.read_bytes() == source.read_bytes()
    if not fresh or not (modules / "ws").is_dir() or not (modules / "ioredis").is_dir():
        target.write_bytes(source.read_bytes())
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError("npm is needed to install the seed design's dependencies")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=deps_dir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return modules


@dataclass
class PeerServer:
    """``node server.js PORT WORKERS REDIS_PORT`` and its own Redis, started and stopped here."""

    log_dir: Path
    workers: int = 2
    peer_dir: Path = PEER_DIR
    port: int = 0
    redis_port: int = 0
    redis: subprocess.Popen[bytes] | None = None
    node: subprocess.Popen[bytes] | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def pids(self) -> dict[str, int]:
        """Every server-side process of the peer, by name."""
        named: dict[str, int] = {}
        if self.node is not None:
            named["seed-primary"] = self.node.pid
        for n, pid in enumerate(self.worker_pids):
            named[f"seed-worker-{n}"] = pid
        if self.redis is not None:
            named["seed-redis"] = self.redis.pid
        return named

    async def start(self, *, timeout_s: float = 30.0) -> None:
        modules = ensure_deps(self.peer_dir)
        redis_server = shutil.which("redis-server")
        node = shutil.which("node")
        if redis_server is None or node is None:
            raise FileNotFoundError("the seed design needs node and redis-server on PATH")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.redis_port = self.redis_port or free_port()
        self.redis = _spawn(
            [
                redis_server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            self.log_dir / "seed-redis.log",
        )
        try:
            async with asyncio.timeout(timeout_s):
                await _wait_port(self.redis_port, self.redis)
                self.node = _spawn(
                    [
                        node,
                        str(self.peer_dir / "server.js"),
                        str(self.port),
                        str(self.workers),
                        str(self.redis_port),
                    ],
                    self.log_dir / "seed-node.log",
                    cwd=self.peer_dir,
                    env={**os.environ, "NODE_PATH": str(modules)},
                )
                await _wait_port(self.port, self.node)
                while len(self.worker_pids) < self.workers:
                    self.worker_pids = child_pids(self.node.pid)
                    await asyncio.sleep(0.05)
                await self._wait_workers_listening()
        except BaseException:
            await self.stop()
            raise

    async def _wait_workers_listening(self) -> None:
        """Every worker answers HTTP (the primary hands each request to one of them)."""
        async with aiohttp.ClientSession() as http:
            for _ in range(self.workers * 4):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{self.port}/") as response:
                        await response.read()

    async def stop(self) -> None:
        """SIGTERM to the node process group started here and to our redis-server; SIGKILL
        after 5 s. Nothing else is touched."""
        if self.node is not None and self.node.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.node.pid, signal.SIGTERM)
            await _reap(self.node, group=True)
        deadline = time.monotonic() + 5.0
        while any(alive(pid) for pid in self.worker_pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # workers leave once their primary is gone
        if self.node is not None and any(alive(pid) for pid in self.worker_pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.node.pid, signal.SIGKILL)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            await _reap(self.redis, group=False)


def _spawn(
    command: list[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A process in a new session (its own process group: the node primary and its
    workers), output to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True
        )


async def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


async def _reap(process: subprocess.Popen[bytes], *, group: bool) -> None:
    deadline = time.monotonic() + 5.0
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        process.wait()


# -- clients ----------------------------------------------------------------------------------


@dataclass
class PeerStudent:
    """A student of the seed design: connects, sends updates, records when (microseconds)."""

    base_url: str
    attempt: str
    quiz: str
    node: int = 0  # the worker the schedule places it on
    seq: int = 0
    sent_at: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None

    async def connect(self, http: aiohttp.ClientSession, *, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            self._ws = await http.ws_connect(student_url(self.base_url, self.quiz))
        self._reader = asyncio.create_task(self._read(self._ws))

    @property
    def local_port(self) -> int | None:
        sockname = self._ws.get_extra_info("sockname") if self._ws is not None else None
        return int(sockname[1]) if sockname else None

    async def send(self, kind: str, **fields: Any) -> int:
        self.seq += 1
        sent = wall_us()
        self.sent_at[self.seq] = sent
        if self._ws is not None and not self._ws.closed:
            frame = student_frame(self.quiz, self.attempt, self.seq, sent, kind, fields)
            await self._ws.send_str(frame.decode())
        return self.seq

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:  # only errors ever come back to a student
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.errors.append(str(message.data)[:200])


@dataclass
class PeerProctor:
    """A proctor of the seed design: every delivery of its quiz, raw, in arrival order."""

    base_url: str
    quiz: str
    node: int = 0
    raw: list[Receipt] = field(default_factory=list)
    other_frames: int = 0
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _reader: asyncio.Task[None] | None = None

    async def connect(self, http: aiohttp.ClientSession, *, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            self._ws = await http.ws_connect(proctor_url(self.base_url, self.quiz))
        self._reader = asyncio.create_task(self._read(self._ws))

    @property
    def local_port(self) -> int | None:
        sockname = self._ws.get_extra_info("sockname") if self._ws is not None else None
        return int(sockname[1]) if sockname else None

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            receipt = parse_delivery(message.data, wall_us())
            if receipt is None:
                self.other_frames += 1
            else:
                self.raw.append(receipt)
