"""Kernel readiness for each data-plane tuning item: ready / not ready / unknown, with the reason.

Facts are gathered once (kernel release, config from /proc/config.gz or /boot/config-*, cgroup v2,
congestion controls, tracefs, physical NICs and their advertised XDP features) plus one throwaway
probe: inside a fresh network namespace (``unshare --net``, gone when the probe exits) a veth is
created and ``tc qdisc add ... fq`` and ``tcp_congestion_control=bbr`` are tried, so a missing qdisc
is reported from what the kernel actually says. :func:`evaluate` is pure and turns facts into items.

Creating a network namespace can stall for seconds on a host that is creating and destroying many
of them, so the probe's answer is kept for ``PROBE_TTL`` seconds (the detail says how old it is)
instead of being asked again on every capability refresh.
"""

from __future__ import annotations

import gzip
import platform
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cniscope.agent.inspectors.unit import NOT_READY, READY, UNKNOWN, UnitResult
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import common_pb2
from cniscope.core.hostpaths import HostPaths

NAMES: dict[int, str] = {int(READY): "ready", int(NOT_READY): "not ready", int(UNKNOWN): "unknown"}

PROBE_SCRIPT = r"""
ip link add cnsrdy0 type veth peer name cnsrdy1 2>&1 || { echo "@veth $?"; exit 0; }
ip link set cnsrdy0 up
echo "@veth 0"
out=$(tc qdisc add dev cnsrdy0 root fq 2>&1); echo "@fq $? $out"
out=$(sysctl -qw net.ipv4.tcp_congestion_control=bbr 2>&1); echo "@bbr $? $out"
"""


@dataclass
class Facts:
    release: str
    version: tuple[int, int]
    config: dict[str, str] | None  # CONFIG_X -> y/m/value; None when unreadable
    config_source: str
    cgroup2: bool  # the cgroup2 filesystem is available (mounted somewhere or mountable)
    cgroup2_mounts: list[str]
    congestion: list[str]
    kprobe_events: bool
    tracefs: bool
    nics: list[cap.ReadinessNic] = field(default_factory=list)  # physical NICs of this namespace
    probe: dict[str, tuple[int, str]] = field(default_factory=dict)  # "fq"/"bbr"/"veth" -> (rc, msg)
    probe_error: str = ""
    probe_age: float = 0.0  # seconds since the throwaway-namespace probe ran

    def opt(self, name: str) -> str | None:
        """The config value; "n" when the config is readable and the option is not set."""
        if self.config is None:
            return None
        return self.config.get(name, "n")


def parse_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v.strip().strip('"')
    return out


def read_config(paths: HostPaths, release: str) -> tuple[dict[str, str] | None, str]:
    gz = paths.proc_path("config.gz")
    boot = (paths.proc.parent / "boot") if paths.proc != Path("/proc") else Path("/boot")
    try:
        return parse_config(gzip.decompress(gz.read_bytes()).decode(errors="replace")), str(gz)
    except (OSError, EOFError, gzip.BadGzipFile):
        pass
    cfg = boot / f"config-{release}"
    try:
        return parse_config(cfg.read_text(errors="replace")), str(cfg)
    except OSError:
        return None, f"neither {gz} nor {cfg} is readable"


PROBE_TTL = 600.0
_probe_lock = threading.Lock()
_probe_cache: tuple[float, dict[str, tuple[int, str]], str] | None = None


def cached_probe(ttl: float = PROBE_TTL) -> tuple[dict[str, tuple[int, str]], str, float]:
    """:func:`run_probe`'s answer, asked again only when older than ``ttl``; plus its age in seconds.
    A probe that failed to run is not kept."""
    global _probe_cache
    with _probe_lock:
        now = time.monotonic()
        if _probe_cache is not None and now - _probe_cache[0] < ttl:
            return _probe_cache[1], _probe_cache[2], now - _probe_cache[0]
        out, err = run_probe()
        _probe_cache = (time.monotonic(), out, err) if out.get("veth", (1, ""))[0] == 0 else None
        return out, err, 0.0


def run_probe(timeout: float = 10) -> tuple[dict[str, tuple[int, str]], str]:
    """Try fq and bbr in a throwaway network namespace; nothing outlives the subprocess."""
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        return {}, "unshare or tc not installed"
    try:
        p = subprocess.run(["unshare", "--net", "--", "sh", "-c", PROBE_SCRIPT], capture_output=True, text=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {}, f"probe timed out after {timeout:.0f}s"
    if p.returncode != 0:
        return {}, (p.stderr.strip().splitlines() or [f"unshare exit {p.returncode}"])[-1]
    out: dict[str, tuple[int, str]] = {}
    for line in p.stdout.splitlines():
        if line.startswith("@"):
            parts = line[1:].split(" ", 2)
            if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = (int(parts[1]), parts[2].strip() if len(parts) > 2 else "")
    if out.get("veth", (1, ""))[0] != 0:
        return out, "could not create a veth in a throwaway namespace"
    return out, ""


def _nics(paths: HostPaths) -> list[cap.ReadinessNic]:
    nics = []
    feats: dict[int, Any] = {}
    from cniscope.agent import netlink

    try:
        feats = netlink.xdp_features()
    except Exception:  # netdev genetlink family missing (kernel < 6.3) or no permission
        feats = {}
    try:  # the interfaces of this network namespace: sysfs may show another one's (nsenter keeps /sys)
        here: dict[str, int] | None = {link.name: link.index for link in netlink.links() if not link.virtual}
    except Exception:
        here = None
    base = paths.sys_path("class", "net")
    try:
        names = sorted(p.name for p in base.iterdir())
    except OSError:
        return []
    for name in names:
        dev = base / name / "device"
        if not dev.exists():
            continue  # virtual interface
        if here is not None and name not in here:
            continue  # sysfs of another namespace: not an interface of this one
        drv = (dev / "driver").resolve().name if (dev / "driver").exists() else "?"
        try:
            ifindex = here[name] if here is not None else int((base / name / "ifindex").read_text())
        except (OSError, ValueError):
            ifindex = -1
        f = feats.get(ifindex)
        nics.append(cap.ReadinessNic(name=name, driver=drv, xdp_native=None if f is None else bool(f.native),
                                     xdp_features=[] if f is None else f.names))
    return nics


def gather(paths: HostPaths, *, probe: bool = True) -> Facts:
    release = platform.release()
    config, source = read_config(paths, release)
    try:
        filesystems = paths.proc_path("filesystems").read_text()
    except OSError:
        filesystems = ""
    mounts = []
    try:
        for line in paths.proc_path("mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                mounts.append(parts[1])
    except OSError:
        pass
    try:
        cc = paths.proc_path("sys", "net", "ipv4", "tcp_available_congestion_control").read_text().split()
    except OSError:
        cc = []
    tracing = paths.sys_path("kernel", "tracing")
    facts = Facts(release=release, version=parse_version(release), config=config, config_source=source,
                  cgroup2="cgroup2" in filesystems.split() or bool(mounts), cgroup2_mounts=mounts,
                  congestion=cc, kprobe_events=(tracing / "kprobe_events").exists(),
                  tracefs=(tracing / "available_events").exists(), nics=_nics(paths))
    if probe:
        facts.probe, facts.probe_error, facts.probe_age = cached_probe()
    return facts


# ---- evaluation ---------------------------------------------------------------------------------
def _kver(f: Facts, need: tuple[int, int], what: str) -> str | None:
    if f.version < need:
        return f"kernel {f.release} < {need[0]}.{need[1]} needed for {what}"
    return None


def _cfg(f: Facts, *names: str) -> tuple[list[str], bool]:
    """(missing options, unknown): an option set to y counts; m counts only if it is loaded later."""
    if f.config is None:
        return [], True
    return [n for n in names if f.opt(n) not in ("y", "m")], False


def _fq(f: Facts) -> tuple[int, str]:
    probe = f.probe.get("fq")
    opt = f.opt("CONFIG_NET_SCH_FQ")
    cfg_txt = "" if opt is None else ("CONFIG_NET_SCH_FQ is not set" if opt == "n" else f"CONFIG_NET_SCH_FQ={opt}")
    if probe is not None:
        if probe[0] == 0:
            return READY, "fq qdisc attached to a test veth"
        msg = probe[1] or f"exit {probe[0]}"
        return NOT_READY, f"fq qdisc missing: tc qdisc add ... fq → {msg!r}" + (f"; {cfg_txt}" if cfg_txt else "")
    if opt == "n":
        return NOT_READY, f"fq qdisc missing: {cfg_txt}"
    if opt in ("y", "m"):
        return READY if opt == "y" else UNKNOWN, f"{cfg_txt} (not tried: {f.probe_error or 'no probe'})"
    return UNKNOWN, f"fq not tried ({f.probe_error or 'no probe'}) and {f.config_source}"


def _judge(problems: list[str], unknowns: list[str], ok: str) -> tuple[int, str]:
    if problems:
        return NOT_READY, "; ".join(problems)
    if unknowns:
        return UNKNOWN, "; ".join(unknowns)
    return READY, ok


def evaluate(f: Facts) -> list[tuple[str, int, str]]:
    items: list[tuple[str, int, str]] = []

    def need(ver: tuple[int, int], what: str, *opts: str) -> tuple[list[str], list[str]]:
        problems, unknowns = [], []
        if (v := _kver(f, ver, what)) is not None:
            problems.append(v)
        missing, unknown = _cfg(f, *opts)
        if unknown and opts:
            unknowns.append(f"kernel config unknown ({f.config_source})")
        if missing:
            problems.append(", ".join(f"{m} is not set" for m in missing))
        return problems, unknowns

    tc_bpf = ("CONFIG_BPF_SYSCALL", "CONFIG_NET_CLS_BPF", "CONFIG_NET_SCH_INGRESS")
    p, u = need((5, 10), "bpf_redirect_peer/neigh", *tc_bpf)
    host_routing = _judge(p, u, f"kernel {f.release} ≥ 5.10 with tc BPF: bpf_redirect_peer/neigh available")
    items.append(("bpf_host_routing", *host_routing))

    p, u = need((5, 7), "socket LB with getpeername hooks", "CONFIG_CGROUP_BPF", "CONFIG_BPF_SYSCALL")
    if not f.cgroup2:
        p.append("cgroup v2 filesystem not available")
    where = ", ".join(f.cgroup2_mounts) or "not mounted yet (mountable)"
    socket_lb = _judge(p, u, f"cgroup BPF hooks and cgroup v2 ({where})")
    items.append(("socket_lb", *socket_lb))

    p, u = need((5, 10), "BPF masquerade", *tc_bpf)
    items.append(("bpf_masquerade", *_judge(p, u, "tc BPF SNAT on the egress device possible")))

    fq_state, fq_reason = _fq(f)
    p, u = need((5, 1), "EDT rate limiting")
    if fq_state == NOT_READY:
        p.append(fq_reason)
    elif fq_state == UNKNOWN:
        u.append(fq_reason)
    items.append(("bandwidth_manager", *_judge(p, u, f"EDT (kernel ≥ 5.1) and {fq_reason}")))

    p, u = [], []
    if "bbr" not in f.congestion:
        p.append(f"bbr not in tcp_available_congestion_control ({' '.join(f.congestion) or 'unreadable'})")
    bbr_probe = f.probe.get("bbr")
    if bbr_probe is not None and bbr_probe[0] != 0:
        p.append(f"bbr cannot be set in a pod namespace: {bbr_probe[1] or 'exit ' + str(bbr_probe[0])}")
    elif bbr_probe is None:
        u.append(f"pod namespace not tried ({f.probe_error or 'no probe'})")
    if (v := _kver(f, (5, 18), "BBR for pods (skb timestamps kept across netns)")) is not None:
        p.append(v)
    if fq_state == NOT_READY:
        p.append("BBR for pods rides on the Bandwidth Manager, which needs fq: " + fq_reason)
    items.append(("bbr", *_judge(p, u, "bbr available on the host and settable in a pod namespace; fq present")))

    items.append(("native_routing", READY,
                  "no kernel requirement beyond IPv4 forwarding; the network must route pod CIDRs (ENI/VPC routes)"))

    if not f.nics:
        xdp = (NOT_READY, "no physical NIC: only virtual interfaces, XDP acceleration needs a driver with native XDP")
    else:
        native = [n for n in f.nics if n.xdp_native]
        unknown = [n for n in f.nics if not n.HasField("xdp_native")]
        desc = ", ".join(f"{n.name} ({n.driver})" for n in f.nics)
        if native:
            xdp = (READY, "native XDP advertised by " + ", ".join(f"{n.name} ({n.driver})" for n in native)
                   + "; confirm bpf_link attach with cniscope node xdp-test IFACE")
        elif unknown:
            xdp = (UNKNOWN, f"XDP features not readable (netdev genetlink, kernel ≥ 6.3) for {desc}")
        else:
            xdp = (NOT_READY, f"no native XDP advertised by {desc}")
    items.append(("xdp_acceleration", *xdp))

    p, u = need((5, 4), "kube-proxy replacement", *tc_bpf, "CONFIG_CGROUP_BPF")
    if socket_lb[0] == NOT_READY:
        p.append("socket LB not ready: " + socket_lb[1])
    kpr = _judge(p, u, "tc BPF, cgroup BPF socket LB and kernel ≥ 5.4")
    d_state, d_reason = kpr
    items.append(("dsr", d_state, ("kernel side: " + d_reason + "; needs native routing and "
                                   "kube-proxy replacement") if d_state == READY else d_reason))

    p, u = need((6, 7), "netkit devices", "CONFIG_NETKIT")
    items.append(("netkit", *_judge(p, u, "CONFIG_NETKIT and kernel ≥ 6.7")))
    items.append(("kube_proxy_replacement", *kpr))

    kp_missing, kp_unknown = _cfg(f, "CONFIG_KPROBES")
    if kp_missing or not f.kprobe_events:
        why = []
        if kp_missing:
            why.append("CONFIG_KPROBES is not set")
        if f.tracefs and not f.kprobe_events:
            why.append("no kprobe_events in tracefs")
        items.append(("kprobes", NOT_READY, "kprobes absent: " + "; ".join(why or ["tracefs not mounted"])
                      + " (tracers use tracepoints only)"))
    elif kp_unknown:
        items.append(("kprobes", UNKNOWN, f"kernel config unknown ({f.config_source})"))
    else:
        items.append(("kprobes", READY, "CONFIG_KPROBES and kprobe_events present"))
    return items


def summarize(d: cap.ReadinessDetail, items: list[common_pb2.CapabilityItem]) -> str:
    """``7 ready, 4 not ready (bandwidth_manager, bbr, kprobes, netkit); kernel config /proc/config.gz``."""
    by: dict[int, list[str]] = {}
    for it in items:
        by.setdefault(int(it.state), []).append(it.name)
    parts = [f"{len(by.get(int(READY), []))} ready"]
    for state, label in ((NOT_READY, "not ready"), (UNKNOWN, "unknown")):
        names = sorted(by.get(int(state), []))
        if names:
            parts.append(f"{len(names)} {label} ({', '.join(names)})")
    return ", ".join(parts) + f"; kernel config {d.config_source or '?'}"


def inspect_readiness(paths: HostPaths) -> UnitResult:
    facts = gather(paths)
    d = cap.ReadinessDetail(
        release=facts.release, config_source=facts.config_source, cgroup2=facts.cgroup2,
        cgroup2_mounts=facts.cgroup2_mounts, congestion_control=facts.congestion,
        kprobe_events=facts.kprobe_events, nics=facts.nics,
        probe={k: cap.NamespaceTrial(rc=rc, message=m) for k, (rc, m) in facts.probe.items()},
        probe_error=facts.probe_error, probe_age_seconds=round(facts.probe_age, 1))
    res = UnitResult(d)
    for name, state, reason in evaluate(facts):
        res.item(name, state, reason)
    res.summary = summarize(d, res.items)
    return res
