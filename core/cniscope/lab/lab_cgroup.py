"""The lab's cgroup v2: ``<cgroup2 mount>/cniscope-lab/<lab>``, holding every process the lab starts.

``Lab.spawn`` moves each process it starts (collector, agents, dnsmasq, a Kubernetes lab's
components) into the leaf ``processes`` right after starting it; what those processes start — the
agents' probes into pod namespaces, targets, tools — inherits it. A Kubernetes lab's pods live in
sibling cgroups below the same directory (``<lab>/<node>/pod<uid>``). Programs attached to the lab's
cgroup (the socket-LB datapath) therefore see the lab's processes and nothing else on the machine.

The cgroup v2 hierarchy is found in ``/proc/mounts`` (type ``cgroup2``): ``/sys/fs/cgroup`` on a
unified host, ``/sys/fs/cgroup/unified`` on a hybrid one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROCESSES = "processes"


def cgroup2_mount(mounts: Path = Path("/proc/mounts")) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, or None (cgroup v1 only)."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return Path(fields[1].replace("\\040", " "))
    return None


def lab_cgroup(lab: str, mounts: Path = Path("/proc/mounts")) -> Path | None:
    root = cgroup2_mount(mounts)
    return None if root is None else root / "cniscope-lab" / lab


def join(lab: str, pid: int) -> Path | None:
    """Move ``pid`` (and its threads) into the lab's ``processes`` cgroup; None without cgroup v2 or
    when the process has already gone."""
    cg = lab_cgroup(lab)
    if cg is None:
        return None
    leaf = cg / PROCESSES
    leaf.mkdir(parents=True, exist_ok=True)
    try:
        (leaf / "cgroup.procs").write_text(str(pid))
    except ProcessLookupError:
        return None
    return leaf


def pids(cg: Path) -> list[int]:
    """Every process in ``cg`` and the cgroups below it."""
    out: list[int] = []
    for dirpath, _, files in os.walk(cg):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                out += [int(x) for x in (Path(dirpath) / "cgroup.procs").read_text().split()]
    return out


def member(lab: str, pid: int) -> bool:
    """Is ``pid`` in the lab's cgroup (or one below it)?"""
    cg = lab_cgroup(lab)
    root = cgroup2_mount()
    if cg is None or root is None:
        return False
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    rel = "/" + str(cg.relative_to(root))
    return any(line.startswith("0::") and (line[3:] == rel or line[3:].startswith(rel + "/"))
               for line in text.splitlines())


def remove(lab: str) -> list[str]:
    """Remove the lab's empty cgroups, leaves first, and ``cniscope-lab`` when no other lab uses it."""
    cg = lab_cgroup(lab)
    if cg is None or not cg.exists():
        return []
    done: list[str] = []
    for dirpath, _, _ in sorted(os.walk(cg), key=lambda w: -len(Path(w[0]).parts)):
        with contextlib.suppress(OSError):
            Path(dirpath).rmdir()
            done.append(f"cgroup {dirpath}")
    with contextlib.suppress(OSError):
        cg.parent.rmdir()
    return done
