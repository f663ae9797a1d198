"""CNI agent footprint: CPU millicores, RSS and PSS of the CNI's processes in the host PID namespace.

Processes are found by name (``/proc/PID/comm`` or argv[0]'s basename) under the configurable proc
root. Discovery scans /proc once; afterwards only the known PIDs are read, and a rescan happens when a
tracked process is gone or its start time changed (a restart), or - while some name has no process -
at most every ``rescan_seconds``. When a process sits in a container cgroup (kubepods, containerd,
crio, docker, libpod), that cgroup's CPU and memory are sampled too, summing every process of the
container. A process that exits mid-sample costs its own series only.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from cniscope.agent.samplers.sampler import make_sample
from cniscope.api.v1 import capabilities_pb2, common_pb2
from cniscope.core.hostpaths import HostPaths

CNI_PROCESSES = ("cilium-agent", "cilium-envoy", "hubble-relay", "aws-k8s-agent", "aws-node", "kube-proxy",
                 "calico-node", "flanneld")
CONTAINER_CGROUP = re.compile(r"kubepods|cri-containerd|crio-|docker-|libpod")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Tracked:
    pid: int
    name: str
    start: int  # starttime in clock ticks since boot: (pid, start) identifies one process
    last_cpu: float | None = None  # seconds of CPU
    last_wall: float | None = None
    cgroup: dict[str, Path] = field(default_factory=dict)  # "v2" | "cpuacct" | "memory" -> dir


@dataclass
class ProcStat:
    start: int
    cpu_seconds: float
    rss_bytes: int


def read_stat(proc: Path, pid: int) -> ProcStat:
    raw = (proc / str(pid) / "stat").read_text()
    rest = raw[raw.rindex(")") + 2:].split()  # comm may contain spaces and parentheses
    # rest[0] is field 3 (state); utime=14, stime=15, starttime=22, rss=24 (1-based)
    return ProcStat(start=int(rest[19]), cpu_seconds=(int(rest[11]) + int(rest[12])) / CLK_TCK,
                    rss_bytes=int(rest[21]) * PAGE)


def read_pss(proc: Path, pid: int) -> int | None:
    try:
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_name(proc: Path, pid: int, names: tuple[str, ...]) -> str | None:
    try:
        comm = (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return None
    for n in names:
        if comm == n[:15]:
            return n
    try:
        argv0 = (proc / str(pid) / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None
    base = argv0.rsplit("/", 1)[-1]
    return base if base in names else None


def container_cgroups(paths: HostPaths, pid: int) -> dict[str, Path]:
    """The container cgroup directories of ``pid`` (v2 unified, or v1 cpuacct + memory)."""
    out: dict[str, Path] = {}
    try:
        lines = paths.proc_path(pid, "cgroup").read_text().splitlines()
    except OSError:
        return out
    root = paths.sys_path("fs", "cgroup")
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, cg_path = parts
        if not CONTAINER_CGROUP.search(cg_path):
            continue
        rel = cg_path.lstrip("/")
        if hid == "0":
            for base in (root, root / "unified"):
                if (base / rel / "cgroup.procs").exists():
                    out["v2"] = base / rel
                    break
        for c in ctrls.split(","):
            if c in ("cpuacct", "memory") and (root / c / rel).is_dir():
                out[c] = root / c / rel
            elif c == "cpu" and (root / "cpu,cpuacct" / rel).is_dir():
                out["cpuacct"] = root / "cpu,cpuacct" / rel
    return out


def cgroup_usage(cg: dict[str, Path]) -> tuple[float | None, int | None]:
    """(CPU seconds, memory bytes) of a container cgroup."""
    cpu: float | None = None
    mem: int | None = None
    try:
        if "v2" in cg:
            for line in (cg["v2"] / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    cpu = int(line.split()[1]) / 1e6
            mem_file = cg["v2"] / "memory.current"
            if mem_file.exists():
                mem = int(mem_file.read_text())
        if cpu is None and "cpuacct" in cg:
            cpu = int((cg["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        if mem is None and "memory" in cg:
            mem = int((cg["memory"] / "memory.usage_in_bytes").read_text())
    except (OSError, ValueError):
        pass
    return cpu, mem


class CniFootprintSampler:
    name = "cni_footprint"

    def __init__(self, paths: HostPaths | None = None, names: tuple[str, ...] = CNI_PROCESSES,
                 rescan_seconds: float = 30.0) -> None:
        self.paths = paths or HostPaths.from_env()
        self.names = names
        self.rescan_seconds = rescan_seconds
        self.tracked: dict[int, Tracked] = {}
        self.scans = 0
        self.errors: dict[str, str] = {}
        self._last_scan = -1e18
        self._cg_last: dict[Path, tuple[float, float]] = {}
        self._need_scan = True

    # -- discovery --------------------------------------------------------------------------------
    def discover(self) -> None:
        self.scans += 1
        self._last_scan = time.monotonic()
        self._need_scan = False
        found: dict[int, Tracked] = {}
        proc = self.paths.proc
        try:
            entries = [e for e in os.listdir(proc) if e.isdigit()]
        except OSError as exc:
            self.errors["discovery"] = f"cannot list {proc}: {exc}"
            return
        for e in entries:
            pid = int(e)
            name = process_name(proc, pid, self.names)
            if name is None:
                continue
            try:
                st = read_stat(proc, pid)
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
            old = self.tracked.get(pid)
            if old is not None and old.start == st.start:
                found[pid] = old
            else:
                found[pid] = Tracked(pid=pid, name=name, start=st.start,
                                     cgroup=container_cgroups(self.paths, pid))
        self.tracked = found

    def _maybe_discover(self) -> None:
        missing = set(self.names) - {t.name for t in self.tracked.values()}
        due = missing and time.monotonic() - self._last_scan >= self.rescan_seconds
        if self._need_scan or due:
            self.discover()

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, now_ns: int) -> list[common_pb2.Sample]:
        self._maybe_discover()
        wall = time.monotonic()
        per: dict[str, dict[str, float]] = {}
        self.errors = {}
        for t in list(self.tracked.values()):
            try:
                st = read_stat(self.paths.proc, t.pid)
                if st.start != t.start:
                    raise ProcessLookupError(f"pid {t.pid} now belongs to another process")
                pss = read_pss(self.paths.proc, t.pid)
            except (OSError, ValueError, IndexError) as exc:
                self.errors[t.name] = f"pid {t.pid} vanished mid-sample: {type(exc).__name__}"
                del self.tracked[t.pid]
                self._need_scan = True  # follow a restart on the next tick, not by scanning every tick
                continue
            agg = per.setdefault(t.name, {"rss": 0.0, "pss": 0.0, "n": 0.0})
            agg["rss"] += st.rss_bytes
            agg["pss"] += pss or 0
            agg["n"] += 1
            if t.last_cpu is not None and t.last_wall is not None and wall > t.last_wall:
                agg["cpu"] = agg.get("cpu", 0.0) + 1000.0 * (st.cpu_seconds - t.last_cpu) / (wall - t.last_wall)
            t.last_cpu, t.last_wall = st.cpu_seconds, wall
        out = []
        for name, a in sorted(per.items()):
            out.append(make_sample("cni_processes", a["n"], now_ns, process=name))
            out.append(make_sample("cni_rss_bytes", a["rss"], now_ns, process=name))
            if a["pss"]:
                out.append(make_sample("cni_pss_bytes", a["pss"], now_ns, process=name))
            if "cpu" in a:
                out.append(make_sample("cni_cpu_millicores", round(a["cpu"], 3), now_ns, process=name))
        out.extend(self._cgroup_samples(wall, now_ns))
        return out

    def _cgroup_samples(self, wall: float, now_ns: int) -> list[common_pb2.Sample]:
        """One CPU/memory pair per container cgroup (all of the container's processes summed)."""
        out = []
        done: set[Path] = set()
        for t in list(self.tracked.values()):
            key = t.cgroup.get("v2") or t.cgroup.get("cpuacct") or t.cgroup.get("memory")
            if key is None or key in done:
                continue
            done.add(key)
            cpu, mem = cgroup_usage(t.cgroup)
            labels = {"process": t.name, "cgroup": key.name}
            if mem is not None:
                out.append(make_sample("cni_cgroup_memory_bytes", mem, now_ns, **labels))
            if cpu is not None:
                prev = self._cg_last.get(key)
                self._cg_last[key] = (cpu, wall)
                if prev is not None and wall > prev[1]:
                    out.append(make_sample("cni_cgroup_cpu_millicores",
                                           round(1000.0 * (cpu - prev[0]) / (wall - prev[1]), 3), now_ns,
                                           **labels))
        return out

    def snapshot(self) -> list[capabilities_pb2.CniProcess]:
        """What is tracked now (for the node report)."""
        self._maybe_discover()
        rows: list[capabilities_pb2.CniProcess] = []
        for t in sorted(self.tracked.values(), key=lambda x: (x.name, x.pid)):
            try:
                st = read_stat(self.paths.proc, t.pid)
            except (OSError, ValueError, IndexError):
                continue
            rows.append(capabilities_pb2.CniProcess(
                process=t.name, pid=t.pid, rss_bytes=st.rss_bytes, pss_bytes=read_pss(self.paths.proc, t.pid),
                cpu_seconds=st.cpu_seconds, cgroup={k: str(v) for k, v in t.cgroup.items()}))
        return rows
