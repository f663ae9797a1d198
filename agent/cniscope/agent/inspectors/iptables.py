"""iptables / nftables census: rule counts per table and chain for iptables-legacy, iptables-nft and
native nft, kube-proxy's mode and size, and kube-proxy's own sync metrics when its endpoint answers.

Read-only: one ``*-save`` per iptables backend (the xtables lock is never held longer than that),
``nft list tables`` plus one ``nft -j list table`` per table that iptables-nft does not already cover.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cniscope.agent.inspectors import iptables_parse as P
from cniscope.agent.inspectors.unit import UnitResult
from cniscope.core.errors import CniscopeError, ParseError, Unavailable
from cniscope.core.hostpaths import HostPaths

KUBE_PROXY_METRICS_DEFAULT = "127.0.0.1:10249"
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
    url = f"http://{address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed local scheme
            body: bytes = resp.read(4 << 20)
            return body.decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unavailable(f"kube-proxy metrics at {address} not reachable ({reason})") from None


def _mode(res: dict[str, Any], sysroot: Path) -> tuple[str, str]:
    nft = res.get("nft", {})
    if isinstance(nft, dict) and nft.get("kube_proxy"):
        return "nftables", "table ip kube-proxy present"
    for b in ("iptables-nft", "iptables-legacy"):
        kube = res.get(b, {}).get("kube") if isinstance(res.get(b), dict) else None
        if kube and kube.get("ipvs"):
            return "ipvs", f"KUBE-SERVICES matches ipset KUBE-CLUSTER-IP ({b})"
    if (sysroot / "class" / "net" / "kube-ipvs0").exists():
        return "ipvs", "interface kube-ipvs0 present"
    for b in ("iptables-nft", "iptables-legacy"):
        r = res.get(b)
        if isinstance(r, dict) and "KUBE-SERVICES" in r.get("tables", {}).get("nat", {}).get("chains", {}):
            return "iptables", f"KUBE-SERVICES chain in the {b} nat table"
    return "none", "no kube-proxy rules in iptables-legacy, iptables-nft or nft"


def census(run: Runner = run_host, *, sysroot: Path = Path("/sys"), metrics_address: str | None = None,
           netns_path: str | None = None, fast_tables: bool = True) -> UnitResult:
    """Everything the unit reports, with the tools run through ``run`` (and the nft table list read
    over netlink in ``netns_path`` unless ``fast_tables`` is off). A backend that fails to run or
    parse gets an ``error`` entry; the others are still reported."""
    res = UnitResult()
    d: dict[str, Any] = {}
    errors: list[str] = []
    unavailable: list[str] = []
    nft_ip_tables: set[str] = set()
    for backend, tool in (("iptables-legacy", "iptables-legacy-save"), ("iptables-nft", "iptables-nft-save")):
        try:
            c = _save(run, tool)
            d[backend] = c.to_dict()
            if backend == "iptables-nft":
                nft_ip_tables = set(c.tables)
        except Unavailable as exc:
            d[backend] = {"unavailable": str(exc)}
            unavailable.append(backend)
        except (CniscopeError, ParseError) as exc:
            d[backend] = {"error": str(exc)}
            errors.append(f"{backend}: {exc}")
    try:
        nc = _nft(run, nft_ip_tables, netns_path, fast_tables)
        nd = nc.to_dict()
        nd["kube_proxy"] = nc.kube_proxy()
        d["nft"] = nd
        errors += [f"nft: {e}" for e in nc.errors]
    except Unavailable as exc:
        d["nft"] = {"unavailable": str(exc)}
        unavailable.append("nft")
    except (CniscopeError, ParseError) as exc:
        d["nft"] = {"error": str(exc)}
        errors.append(f"nft: {exc}")
    if len(unavailable) == 3:
        raise Unavailable("none of iptables-legacy-save, iptables-nft-save, nft is installed")

    mode, why = _mode(d, sysroot)
    kp: dict[str, Any] = {"mode": mode, "evidence": why}
    for b in ("iptables-nft", "iptables-legacy"):
        r = d.get(b)
        if isinstance(r, dict) and r.get("kube", {}).get("services_rules"):
            kp.update(backend=b, services_rules=r["kube"]["services_rules"], svc_chains=r["kube"]["svc_chains"],
                      sep_chains=r["kube"]["sep_chains"], nat_rules=r["tables"]["nat"]["rules"])
            break
    address = metrics_address or os.environ.get("CNISCOPE_KUBE_PROXY_METRICS", KUBE_PROXY_METRICS_DEFAULT)
    if address.lower() != "off":
        try:
            kp["metrics"] = P.kube_proxy_figures(fetch_metrics(address))
            kp["metrics_address"] = address
            try:
                reported = fetch_metrics(address, "/proxyMode").strip()
                if reported:
                    kp["reported_mode"] = reported
            except Unavailable:
                pass
        except Unavailable as exc:
            kp["metrics"] = {"unavailable": str(exc)}
        except ParseError as exc:
            kp["metrics"] = {"error": str(exc)}
            errors.append(f"kube-proxy metrics: {exc}")
    d["kube_proxy"] = kp
    d["errors"] = errors
    res.detail = d
    return res


def inspect_iptables(paths: HostPaths) -> UnitResult:
    return census(run_host, sysroot=paths.sys)
