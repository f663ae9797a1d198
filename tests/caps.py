"""Capability probes for privileged tests. A missing capability skips locally and FAILS under
CI=true, so a silently skipped privileged suite cannot pass."""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"required capability missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    name = f"cnsprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@functools.cache
def bpf_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for bpf()"
    libc = ctypes.CDLL(None, use_errno=True)
    # BPF_PROG_GET_NEXT_ID (11) with a zeroed attr: ENOENT/0 means the syscall is usable
    attr = ctypes.create_string_buffer(128)
    rc = libc.syscall(321, 11, attr, 128)
    err = ctypes.get_errno()
    if rc < 0 and err not in (2,):
        return f"bpf() refused: {os.strerror(err)}"
    return None


@functools.cache
def bcc_reason() -> str | None:
    if bpf_reason():
        return bpf_reason()
    if not Path("/usr/lib/python3/dist-packages/bcc").exists():
        return "Debian's python3-bpfcc is not installed"
    kver = os.uname().release
    if not Path(f"/lib/modules/{kver}/build").exists():
        return f"no kernel headers at /lib/modules/{kver}/build"
    if not Path("/sys/kernel/tracing/events").exists():
        return "tracefs is not mounted at /sys/kernel/tracing"
    return None


def require(marker: str) -> None:
    reason = {"netns": netns_reason, "bpf": bpf_reason, "bcc": bcc_reason}.get(marker, lambda: None)()
    if reason:
        missing(reason)


def tool(name: str) -> str:
    """The path of a command-line tool the setup installs; missing (a failure under CI) without it."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (scripts/host-setup.sh installs it)")
    return path


@functools.cache
def _kubectl() -> str | None:
    system = shutil.which("kubectl")
    if system is not None:
        return system
    # the lab's Kubernetes harness (built by `make test`) is kubectl when invoked under that name
    from cniscope.core.errors import CniscopeError
    from cniscope.lab.kube import harness

    try:
        binary = harness.binary()
    except CniscopeError:
        return None
    link = Path(binary).parent / "kubectl"
    if not link.exists():
        link.symlink_to(Path(binary).name)
    return str(link)


def kubectl() -> str:
    """kubectl: the one on PATH, else the lab harness's; missing (a failure under CI) without either."""
    path = _kubectl()
    if path is None:
        missing("no kubectl on PATH and no built Kubernetes harness (make kube-harness)")
    return path
