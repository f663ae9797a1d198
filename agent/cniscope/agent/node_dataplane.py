"""What this node's data plane actually runs, read from the processes (host PID namespace):

- cilium-agent's effective options: its ``--config-dir`` (the cilium-config ConfigMap as mounted in
  its container: one file per key, read through ``/proc/PID/root``) overlaid with the flags on its
  command line, which win as they do in the agent (flags over config directory);
- kube-proxy's mode: what it answers on ``/proxyMode`` of its metrics address (default
  127.0.0.1:10249, in the host network namespace), else ``--proxy-mode`` on its command line, else
  the ``mode`` of the file named by ``--config`` (through ``/proc/PID/root``; empty means iptables).

Pure parsing (:func:`parse_flags`, :func:`cilium_options`) is separate from reading /proc.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cniscope.agent import local_http
from cniscope.core.fingerprint import NodeDataPlane, kube_proxy_mode
from cniscope.core.hostpaths import HostPaths

CILIUM_CONFIG_DIR = "/tmp/cilium/config-map"   # cilium-agent's default --config-dir in the Helm chart
KUBE_PROXY_METRICS = "127.0.0.1:10249"
MODES = {"iptables", "ipvs", "nftables", "kernelspace", "userspace"}


def pids(paths: HostPaths, comm: str) -> list[int]:
    """Every PID whose comm is ``comm``, lowest first; those in this process's network namespace only,
    when some are (kube-proxy and the CNI agents run in the host network, as the agent does; nodes
    sharing one PID namespace, as a lab's do, each see their own)."""
    out = []
    for entry in os.scandir(paths.proc):
        if entry.name.isdigit():
            try:
                if paths.proc_path(entry.name, "comm").read_text().strip() == comm:
                    out.append(int(entry.name))
            except OSError:
                continue
    try:
        here = os.readlink("/proc/self/ns/net")
    except OSError:
        return sorted(out)
    local = [p for p in out if _netns(paths, p) == here]
    return sorted(local or out)


def _netns(paths: HostPaths, pid: int) -> str:
    try:
        return os.readlink(paths.proc_path(pid, "ns", "net"))
    except OSError:
        return ""


def find_pid(paths: HostPaths, comm: str) -> int | None:
    """The lowest PID whose comm is ``comm`` (a container's main process starts first)."""
    found = pids(paths, comm)
    return found[0] if found else None


def cmdline(paths: HostPaths, pid: int) -> list[str]:
    raw = paths.proc_path(pid, "cmdline").read_bytes()
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def parse_flags(args: list[str]) -> dict[str, str]:
    """``--key=value``, ``--key value`` and bare ``--flag`` (true) from a command line."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and len(a) > 2:
            key, eq, value = a[2:].partition("=")
            if not eq:
                if i + 1 < len(args) and not args[i + 1].startswith("-"):
                    value, i = args[i + 1], i + 1
                else:
                    value = "true"
            out[key] = value
        i += 1
    return out


def read_config_dir(root: Path) -> dict[str, str]:
    """A ConfigMap volume: one file per key (``..data`` and other dot entries are the mount's own)."""
    out = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".."):
            continue
        try:
            if entry.is_file():
                out[entry.name] = Path(entry.path).read_text().strip()
        except OSError:
            continue
    return out


def cilium_options(config_dir: dict[str, str], flags: dict[str, str]) -> dict[str, str]:
    return {**config_dir, **{k: v for k, v in flags.items() if k != "config-dir"}}


def cilium(paths: HostPaths, pid: int | None = None) -> tuple[dict[str, str] | None, str]:
    pid = pid or find_pid(paths, "cilium-agent")
    if pid is None:
        return None, ""
    try:
        flags = parse_flags(cmdline(paths, pid))
    except OSError:
        return None, ""
    cdir = flags.get("config-dir", CILIUM_CONFIG_DIR)
    try:
        files = read_config_dir(paths.proc_path(pid, "root", cdir.lstrip("/")))
        where = f"--config-dir {cdir}"
    except OSError as exc:
        files, where = {}, f"config dir {cdir} unreadable ({exc.strerror})"
    opts = cilium_options(files, flags)
    overrides = sorted(set(flags) - {"config-dir"})
    return opts, (f"process cilium-agent (pid {pid}): {where}" +
                  (f" + flags {', '.join(overrides)}" if overrides else ""))


def proxy_mode_endpoint(address: str = KUBE_PROXY_METRICS, timeout: float = 1.0) -> str:
    try:
        text = local_http.get(address, "/proxyMode", timeout=timeout, limit=64).strip()
    except OSError:
        return ""
    return text if text in MODES else ""


def kube_proxy(paths: HostPaths, metrics: str = "", pid: int | None = None) -> tuple[str, str]:
    pid = pid or find_pid(paths, "kube-proxy")
    if pid is None:
        return "", ""
    try:
        flags = parse_flags(cmdline(paths, pid))
    except OSError:
        flags = {}
    address = metrics or flags.get("metrics-bind-address", "") or KUBE_PROXY_METRICS
    address = re.sub(r"^0\.0\.0\.0:", "127.0.0.1:", address)
    mode = proxy_mode_endpoint(address)
    if mode:
        return mode, f"kube-proxy (pid {pid}) /proxyMode on {address}"
    if flags.get("proxy-mode"):
        return flags["proxy-mode"], f"process kube-proxy (pid {pid}): --proxy-mode"
    if flags.get("config"):
        try:
            text = paths.proc_path(pid, "root", flags["config"].lstrip("/")).read_text()
        except OSError:
            return "", ""
        explicit = re.search(r"^mode:\s*[\"']?[A-Za-z]+", text, re.MULTILINE)
        return kube_proxy_mode({"config": text}), (f"process kube-proxy (pid {pid}): --config {flags['config']}"
                                                   + ("" if explicit else " (mode unset: iptables)"))
    return "iptables", f"default: iptables (kube-proxy pid {pid} sets no mode)"


def read(paths: HostPaths, kube_proxy_metrics: str = "", *, cilium_pid: int | None = None,
         kube_proxy_pid: int | None = None) -> NodeDataPlane:
    """What this node runs; the PIDs are found by process name unless given."""
    opts, csrc = cilium(paths, cilium_pid)
    mode, ksrc = kube_proxy(paths, kube_proxy_metrics, kube_proxy_pid)
    return NodeDataPlane(cilium_config=opts, cilium_source=csrc, kube_proxy_mode=mode, kube_proxy_source=ksrc)
