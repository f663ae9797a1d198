"""Linux capabilities of this process, and which cniscope feature needs which.

The agent runs with a short list of capabilities instead of privileged mode (daemonset/). A feature
whose capability is missing reports ``unavailable: missing CAP_X`` and the rest keeps running. The
kernel lets CAP_SYS_ADMIN stand in for CAP_BPF and CAP_PERFMON (``bpf_capable()``,
``perfmon_capable()``), and so does :func:`missing`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from cniscope.core.errors import Unavailable

# include/uapi/linux/capability.h
CAP_NUMBERS: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
CAP_NAMES = {v: k for k, v in CAP_NUMBERS.items()}

# Capabilities the kernel accepts in place of another.
STAND_INS: dict[str, tuple[str, ...]] = {"BPF": ("SYS_ADMIN",), "PERFMON": ("SYS_ADMIN",)}

# What each agent feature needs; keys that name an inspection unit gate that unit. The DaemonSet adds
# exactly the union of these (a test checks it).
FEATURE_CAPS: dict[str, tuple[str, ...]] = {
    "bpf": ("SYS_ADMIN",),                # eBPF census: BPF_*_GET_NEXT_ID / GET_FD_BY_ID are CAP_SYS_ADMIN only
    "iptables": ("NET_ADMIN",),           # iptables/nft census: iptables-save and nft list need CAP_NET_ADMIN
    "tracers": ("BPF", "PERFMON"),        # load tracing programs, perf_event_open on tracepoints
    "pod_path": ("SYS_ADMIN",),           # setns() into the pod network namespace (pod and service paths)
    "probe_pod_netns": ("SYS_PTRACE",),   # open another process's /proc/PID/ns/net (the probe pod, Kubernetes)
    "raw_icmp": ("NET_RAW",),             # rtt: ping over raw ICMP when ICMP datagram sockets are not allowed
    "memlock": ("SYS_RESOURCE",),         # raise RLIMIT_MEMLOCK: only kernels before 5.11 charge BPF maps to it
}
# Features whose capability matters only on some kernels: (major, minor) from which it is not needed.
NOT_NEEDED_FROM: dict[str, tuple[int, int]] = {"memlock": (5, 11)}


def parse_status(text: str, field: str = "CapEff") -> set[str]:
    """Capability names from a ``/proc/PID/status`` text (``CapEff:\\t000001ffffffffff``)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == field:
            mask = int(value.strip(), 16)
            return {CAP_NAMES.get(i, f"CAP_{i}") for i in range(mask.bit_length()) if mask >> i & 1}
    raise ValueError(f"no {field} line in status text")


def effective(proc: Path = Path("/proc")) -> set[str]:
    """This process's effective capabilities (read from its own status, never from the host's)."""
    return parse_status((proc / "self" / "status").read_text())


def missing(needed: Iterable[str], have: set[str] | None = None) -> list[str]:
    """The capabilities of ``needed`` this process lacks, counting the kernel's stand-ins."""
    eff = effective() if have is None else have
    out = []
    for cap in needed:
        if cap in eff or any(s in eff for s in STAND_INS.get(cap, ())):
            continue
        out.append(cap)
    return out


def reason(caps: Iterable[str]) -> str:
    return "missing " + ", ".join(f"CAP_{c}" for c in caps)


def require(*caps: str, have: set[str] | None = None) -> None:
    """Raise :class:`Unavailable` ("missing CAP_X") when any of ``caps`` is missing."""
    lack = missing(caps, have)
    if lack:
        raise Unavailable(reason(lack))


def require_feature(feature: str, have: set[str] | None = None, release: str = "") -> None:
    lack = feature_missing(feature, have, release)
    if lack:
        raise Unavailable(reason(lack))


def required_by(fn: object) -> tuple[str, ...]:
    caps: tuple[str, ...] = getattr(fn, "__cniscope_caps__", ())
    return caps


def kernel_version(release: str) -> tuple[int, int]:
    m = release.split(".")
    try:
        return int(m[0]), int("".join(ch for ch in m[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def feature_missing(feature: str, have: set[str] | None = None, release: str = "") -> list[str]:
    """The capabilities ``feature`` lacks here ([] when it is usable or not needed on this kernel)."""
    since = NOT_NEEDED_FROM.get(feature)
    if since and release and kernel_version(release) >= since:
        return []
    return missing(FEATURE_CAPS[feature], have)


def icmp_dgram_allowed(proc: Path = Path("/proc")) -> bool:
    """May this process open unprivileged ICMP sockets (net.ipv4.ping_group_range covers its gid)?"""
    import os

    try:
        lo, hi = (int(x) for x in (proc / "sys/net/ipv4/ping_group_range").read_text().split())
    except (OSError, ValueError):
        return False
    return any(lo <= g <= hi for g in {os.getgid(), *os.getgroups()})


# Features a probe kind may declare (``privileges`` in the probe table) that it needs only sometimes.
NEEDED_ONLY_WHEN: dict[str, Callable[[], bool]] = {"raw_icmp": lambda: not icmp_dgram_allowed()}


def probe_features(privileges: Iterable[str], netns: str = "") -> list[str]:
    """Features a probe needs: its kind's ``privileges`` (where they apply here) and those of
    originating in ``netns``; checked before any packet leaves."""
    out = []
    if netns:
        out.append("pod_path")
        if "/proc/" in netns:
            out.append("probe_pod_netns")
    out += [f for f in privileges if NEEDED_ONLY_WHEN.get(f, lambda: True)()]
    return out


def require_probe(privileges: Iterable[str], netns: str = "", have: set[str] | None = None) -> None:
    lack: list[str] = []
    for f in probe_features(privileges, netns):
        lack += [c for c in missing(FEATURE_CAPS[f], have) if c not in lack]
    if lack:
        raise Unavailable(reason(lack))
