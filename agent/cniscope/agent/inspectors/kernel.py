"""Basic kernel facts: release, BTF, cgroup v2, tracefs — the ground the other units stand on."""

from __future__ import annotations

import platform

from cniscope.agent.inspectors.readiness import parse_version
from cniscope.agent.inspectors.unit import NOT_READY, READY, UnitResult
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.hostpaths import HostPaths


def summarize(d: cap.KernelDetail) -> str:
    """``kernel 6.18, BTF, cgroup v2, tracefs``."""
    major, minor = parse_version(d.release)
    return ", ".join([f"kernel {major}.{minor}" if major else f"kernel {d.release or '?'}",
                      "BTF" if d.btf else "no BTF", "cgroup v2" if d.cgroup_v2 else "no cgroup v2",
                      "tracefs" if d.tracefs else "no tracefs"])


def inspect_kernel(paths: HostPaths) -> UnitResult:
    d = cap.KernelDetail(
        release=platform.release(),
        btf=paths.sys_path("kernel", "btf", "vmlinux").exists(),
        cgroup_v2=paths.sys_path("fs", "cgroup", "cgroup.controllers").exists()
        or paths.sys_path("fs", "cgroup", "unified", "cgroup.controllers").exists(),
        tracefs=paths.sys_path("kernel", "tracing", "available_events").exists())
    res = UnitResult(d, summarize(d))
    res.item("btf", READY if d.btf else NOT_READY, "/sys/kernel/btf/vmlinux " + ("present" if d.btf else "missing"))
    return res
