"""Typed access to the kernel's BPF objects through the bpf() syscall (no libbpf, no bpftool)."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from cniscope.agent.bpf import syscall as sc
from cniscope.agent.bpf.info import ARRAY_LIKE, PERCPU, UNCOUNTABLE, MapInfo, possible_cpus
from cniscope.agent.bpf.syscall import ENOTSUPP, BpfError, Fd

__all__ = ["BpfError", "Count", "Fd", "count_entries"]

_NO_BATCH = {errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP, errno.ENOSYS}


@dataclass(frozen=True)
class Count:
    entries: int | None
    method: str  # batch | walk | fixed | none
    syscalls: int
    note: str = ""


def value_stride(info: MapInfo, ncpu: int | None = None) -> int:
    """Bytes the kernel writes per value on lookup (per-CPU maps: 8-byte aligned slot per CPU)."""
    if info.type in PERCPU:
        return ((info.value_size + 7) // 8) * 8 * (ncpu or possible_cpus())
    return info.value_size


def count_entries(fd: int, info: MapInfo, *, chunk: int = 4096, method: str = "auto") -> Count:
    """Live entries of one map: batched lookup, or a GET_NEXT_KEY walk where batching is unsupported."""
    if info.type in ARRAY_LIKE:
        return Count(info.max_entries, "fixed", 0, "array: every slot exists")
    if info.type in UNCOUNTABLE:
        return Count(None, "none", 0, f"{info.type}: not key-iterable")
    if method in ("auto", "batch"):
        try:
            n, calls = sc.count_batched(fd, info.key_size, value_stride(info), chunk)
            return Count(n, "batch", calls)
        except BpfError as exc:
            if method == "batch" or exc.errno not in _NO_BATCH:
                raise
    n, calls = sc.count_walk(fd, info.key_size, limit=2 * max(info.max_entries, 1))
    return Count(n, "walk", calls)
