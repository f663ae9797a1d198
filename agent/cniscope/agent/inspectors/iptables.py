"""iptables / nftables census: rule counts per table and chain for iptables-legacy, iptables-nft and
native nft, kube-proxy's mode and size, and kube-proxy's own sync metrics when its endpoint answers.

Read-only: one ``*-save`` per iptables backend (the xtables lock is never held longer than that),
``nft list tables`` plus one ``nft -j list table`` per table that iptables-nft does not already cover.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cniscope.agent import local_http
from cniscope.agent.inspectors import iptables_parse as P
from cniscope.agent.inspectors.unit import UnitResult
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.config import AgentConfig, env_value
from cniscope.core.errors import CniscopeError, ParseError, Unavailable
from cniscope.core.hostpaths import HostPaths

TOOL_TIMEOUT = 20.0
METRICS_TIMEOUT = 0.3


@dataclass
class ToolOutput:
    rc: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], ToolOutput]


def run_host(argv: Sequence[str]) -> ToolOutput:
    if shutil.which(argv[0]) is None:
        raise Unavailable(f"{argv[0]} not installed")
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CniscopeError(f"{argv[0]} timed out after {TOOL_TIMEOUT:.0f}s") from None
    return ToolOutput(p.returncode, p.stdout, p.stderr)


def in_netns(netns_path: str | Path) -> Runner:
    """A runner that executes the tools inside another network namespace (lab nodes, tests)."""

    def run(argv: Sequence[str]) -> ToolOutput:
        if shutil.which(argv[0]) is None:
            raise Unavailable(f"{argv[0]} not installed")
        return run_host(["nsenter", f"--net={netns_path}", "--", *argv])

    return run


def _save(run: Runner, tool: str) -> P.SaveCensus:
    out = run([tool])
    if out.rc != 0:
        err = (out.stderr.strip().splitlines() or [f"exit {out.rc}"])[-1]
        raise CniscopeError(f"{tool}: {err}")
    census = P.parse_iptables_save(out.stdout)
    census.warnings += [ln.lstrip("# ").strip() for ln in out.stderr.splitlines() if "Warning" in ln]
    return census


NFPROTO = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


def tables_via_netlink(netns_path: str | None) -> list[tuple[str, str]]:
    """The nftables table list from one NFT_MSG_GETTABLE dump. ``nft list tables`` fetches the whole
    ruleset first (~0.2 s with 10,000 rules); this costs a few milliseconds."""
    from cniscope.agent import netlink

    return [(NFPROTO.get(fam, str(fam)), name) for fam, name in netlink.nft_tables(netns_path)]


def _tables(run: Runner, netns_path: str | None, fast: bool) -> list[tuple[str, str]]:
    if fast and shutil.which("nft") is not None:
        try:
            return tables_via_netlink(netns_path)
        except Exception:  # noqa: S110 - netlink refused: the nft tool still answers
            pass
    out = run(["nft", "list", "tables"])
    if out.rc != 0:
        raise CniscopeError(f"nft list tables: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return P.parse_nft_tables(out.stdout)


def _nft(run: Runner, skip_ip_tables: set[str], netns_path: str | None = None, fast: bool = True) -> P.NftCensus:
    census = P.NftCensus()
    for fam, name in _tables(run, netns_path, fast):
        if fam == "ip" and name in skip_ip_tables:
            continue  # an iptables-nft table, already counted from iptables-nft-save
        t = run(["nft", "-j", "list", "table", fam, name])
        try:
            if t.rc != 0:
                raise CniscopeError(f"{(t.stderr.strip().splitlines() or ['?'])[-1]}")
            census.merge(P.parse_nft_json(t.stdout))
        except (CniscopeError, ParseError) as exc:  # one table's failure costs that table only
            census.errors.append(f"table {fam} {name}: {exc}")
    return census


def fetch_metrics(address: str, path: str = "/metrics", timeout: float = METRICS_TIMEOUT) -> str:
    try:
        return local_http.get(address, path, timeout=timeout)
    except OSError as exc:
        raise Unavailable(f"kube-proxy metrics at {address} not reachable ({exc})") from None


def _mode(d: cap.IptablesDetail, sysroot: Path) -> tuple[str, str]:
    if d.nft.HasField("kube_proxy"):
        return "nftables", "table ip kube-proxy present"
    backends = (("iptables-nft", d.iptables_nft), ("iptables-legacy", d.iptables_legacy))
    for name, b in backends:
        if b.kube.ipvs:
            return "ipvs", f"KUBE-SERVICES matches ipset KUBE-CLUSTER-IP ({name})"
    if (sysroot / "class" / "net" / "kube-ipvs0").exists():
        return "ipvs", "interface kube-ipvs0 present"
    for name, b in backends:
        if "nat" in b.tables and "KUBE-SERVICES" in b.tables["nat"].chains:
            return "iptables", f"KUBE-SERVICES chain in the {name} nat table"
    return "none", "no kube-proxy rules in iptables-legacy, iptables-nft or nft"


def _kube_proxy(d: cap.IptablesDetail, sysroot: Path, metrics_address: str | None) -> None:
    kp = d.kube_proxy
    kp.mode, kp.evidence = _mode(d, sysroot)
    for name, b in (("iptables-nft", d.iptables_nft), ("iptables-legacy", d.iptables_legacy)):
        if b.kube.services_rules:
            kp.backend, kp.services_rules = name, b.kube.services_rules
            kp.svc_chains, kp.sep_chains = b.kube.svc_chains, b.kube.sep_chains
            kp.nat_rules = b.tables["nat"].rules
            break
    address = metrics_address or str(env_value(AgentConfig, "kube_proxy_metrics"))
    if address.lower() == "off":
        return
    try:
        kp.metrics.CopyFrom(P.kube_proxy_figures(fetch_metrics(address)))
        kp.metrics_address = address
        try:
            kp.reported_mode = fetch_metrics(address, "/proxyMode").strip()
        except Unavailable:
            pass
    except Unavailable as exc:
        kp.metrics.unavailable = str(exc)
    except ParseError as exc:
        kp.metrics.error = str(exc)
        d.errors.append(f"kube-proxy metrics: {exc}")


def _backend_summary(name: str, b: cap.IptablesBackend) -> str | None:
    if b.error:
        return f"{name} error"
    if not b.ran or not b.rules:
        return None
    nat = b.tables["nat"].rules if "nat" in b.tables else 0
    if not nat:
        return f"{name} {b.rules:,} rules"
    return f"{name} {nat:,} NAT rules" + (f" + {b.rules - nat:,} other" if b.rules > nat else "")


def summarize(d: cap.IptablesDetail) -> str:
    """``iptables-nft 10,008 NAT rules + 12 other, kube-proxy iptables (1,000 services, 3,000 endpoints),
    sync 170 ms``."""
    parts = [p for p in (_backend_summary("iptables-legacy", d.iptables_legacy),
                         _backend_summary("iptables-nft", d.iptables_nft)) if p]
    if d.nft.error:
        parts.append("nft error")
    elif d.nft.rules:
        parts.append(f"nft {d.nft.rules:,} rules")
    kp = f"kube-proxy {d.kube_proxy.mode or '?'}"
    if d.kube_proxy.svc_chains:
        kp += f" ({d.kube_proxy.svc_chains:,} services, {d.kube_proxy.sep_chains:,} endpoints)"
    elif d.nft.HasField("kube_proxy"):
        kp += f" ({d.nft.kube_proxy.service_chains:,} services, {d.nft.kube_proxy.endpoint_chains:,} endpoints)"
    if d.kube_proxy.metrics.HasField("sync_mean_ms"):
        kp += f", sync {d.kube_proxy.metrics.sync_mean_ms:.0f} ms"
    return ", ".join([*(parts or ["no rules"]), kp])


def census(run: Runner = run_host, *, sysroot: Path = Path("/sys"), metrics_address: str | None = None,
           netns_path: str | None = None, fast_tables: bool = True) -> UnitResult:
    """Everything the unit reports, with the tools run through ``run`` (and the nft table list read
    over netlink in ``netns_path`` unless ``fast_tables`` is off). A backend that fails to run or
    parse says so in its ``error``; the others are still reported."""
    d = cap.IptablesDetail()
    unavailable: list[str] = []
    nft_ip_tables: set[str] = set()
    for name, backend, tool in (("iptables-legacy", d.iptables_legacy, "iptables-legacy-save"),
                                ("iptables-nft", d.iptables_nft, "iptables-nft-save")):
        try:
            c = _save(run, tool)
            backend.CopyFrom(c.to_proto())
            if name == "iptables-nft":
                nft_ip_tables = set(c.tables)
        except Unavailable as exc:
            backend.unavailable = str(exc)
            unavailable.append(name)
        except (CniscopeError, ParseError) as exc:
            backend.error = str(exc)
            d.errors.append(f"{name}: {exc}")
    try:
        nc = _nft(run, nft_ip_tables, netns_path, fast_tables)
        d.nft.CopyFrom(nc.to_proto())
        d.errors.extend(f"nft: {e}" for e in nc.errors)
    except Unavailable as exc:
        d.nft.unavailable = str(exc)
        unavailable.append("nft")
    except (CniscopeError, ParseError) as exc:
        d.nft.error = str(exc)
        d.errors.append(f"nft: {exc}")
    if len(unavailable) == 3:
        raise Unavailable("none of iptables-legacy-save, iptables-nft-save, nft is installed")
    _kube_proxy(d, sysroot, metrics_address)
    return UnitResult(d, summarize(d))


def inspect_iptables(paths: HostPaths) -> UnitResult:
    return census(run_host, sysroot=paths.sys)
