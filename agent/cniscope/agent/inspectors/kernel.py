"""Basic kernel facts: release, BTF, cgroup v2, tracefs — the ground the other units stand on."""

from __future__ import annotations

import platform

from cniscope.agent.inspectors.unit import NOT_READY, READY, UnitResult
from cniscope.core.hostpaths import HostPaths


def inspect_kernel(paths: HostPaths) -> UnitResult:
    res = UnitResult()
    release = platform.release()
    btf = paths.sys_path("kernel", "btf", "vmlinux").exists()
    cgroup2 = paths.sys_path("fs", "cgroup", "cgroup.controllers").exists() or \
        paths.sys_path("fs", "cgroup", "unified", "cgroup.controllers").exists()
    tracefs = paths.sys_path("kernel", "tracing", "available_events").exists()
    res.detail = {"release": release, "btf": btf, "cgroup_v2": cgroup2, "tracefs": tracefs}
    res.item("btf", READY if btf else NOT_READY, "/sys/kernel/btf/vmlinux " + ("present" if btf else "missing"))
    return res
