"""CPU and RSS of named processes, read from /proc (Linux; no psutil).

``ResourceSampler`` samples every process (and the machine) once a second; ``report()``
gives, per process, the mean cores used over the run and the peak resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of the process (all threads); None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_rss_mib(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    return int(raw.split()[1]) * _PAGE / 2**20


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, summed over cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in first]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already inside user
    return (total - idle) / _TICKS, total / _TICKS


def infra_pids(run_dir: Path) -> dict[str, int]:
    """Kafka, Redis and DynamoDB Local as recorded by ``infra/stack`` (pid files)."""
    found: dict[str, int] = {}
    for name in ("kafka", "redis", "dynamodb"):
        with contextlib.suppress(OSError, ValueError):
            pid = int((run_dir / f"{name}.pid").read_text().strip())
            if process_cpu_s(pid) is not None:
                found[name] = pid
    return found


@dataclass
class _Track:
    pid: int
    first_cpu: float
    last_cpu: float
    peak_rss: float = 0.0
    last_rss: float = 0.0


@dataclass
class ResourceSampler:
    interval_s: float = 1.0
    tracks: dict[str, _Track] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list)
    _machine_first: tuple[float, float] = (0.0, 0.0)
    _machine_last: tuple[float, float] = (0.0, 0.0)
    _elapsed_s: float = 0.0
    _started: float = 0.0
    _wall_started: float = 0.0

    def add(self, name: str, pid: int) -> None:
        cpu = process_cpu_s(pid)
        if cpu is not None:
            self.tracks[name] = _Track(pid, cpu, cpu)

    def start(self) -> None:
        self._machine_first = self._machine_last = machine_cpu_s()
        self._started = asyncio.get_running_loop().time()
        self._wall_started = time.time()

    def sample(self) -> None:
        now = asyncio.get_running_loop().time()
        point: dict[str, float] = {"t": round(now - self._started, 1), "wall": time.time()}
        for name, track in self.tracks.items():
            cpu = process_cpu_s(track.pid)
            rss = process_rss_mib(track.pid)
            if cpu is None or rss is None:
                continue
            point[f"{name}.cores"] = round((cpu - track.last_cpu) / self.interval_s, 3)
            track.last_cpu = cpu
            track.last_rss = rss
            track.peak_rss = max(track.peak_rss, rss)
        self._machine_last = machine_cpu_s()
        self._elapsed_s = now - self._started
        self.timeline.append(point)

    async def run(self) -> None:
        self.start()
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    def cores(self, name: str) -> float:
        track = self.tracks[name]
        return (track.last_cpu - track.first_cpu) / self._elapsed_s if self._elapsed_s else 0.0

    def window_cores(self, start_wall: float, end_wall: float) -> dict[str, float]:
        """Mean cores per process over the samples inside a wall-clock window (the load
        phase, without join, settle and drain)."""
        inside = [p for p in self.timeline if start_wall < p["wall"] <= end_wall]
        names = {k for p in inside for k in p if k.endswith(".cores")}
        return {
            k.removesuffix(".cores"): round(sum(p.get(k, 0.0) for p in inside) / len(inside), 3)
            for k in sorted(names)
        }

    def report(self, own: tuple[str, ...] = ()) -> dict[str, Any]:
        busy = self._machine_last[0] - self._machine_first[0]
        total = self._machine_last[1] - self._machine_first[1]
        processes = {
            name: {
                "pid": t.pid,
                "cpu_cores_mean": round(self.cores(name), 3),
                "rss_mib_peak": round(t.peak_rss, 1),
                "rss_mib_end": round(t.last_rss, 1),
            }
            for name, t in self.tracks.items()
        }
        simulator = sum(self.cores(name) for name in own if name in self.tracks)
        machine_cores = busy / self._elapsed_s if self._elapsed_s else 0.0
        return {
            "window_s": round(self._elapsed_s, 1),
            "machine_cores": os.cpu_count(),
            "machine_busy_cores_mean": round(machine_cores, 3),
            "machine_busy_share": round(busy / total, 3) if total else 0.0,
            "simulator_cores_mean": round(simulator, 3),
            "simulator_share_of_busy": round(simulator / machine_cores, 3)
            if machine_cores
            else 0.0,
            "processes": processes,
        }
