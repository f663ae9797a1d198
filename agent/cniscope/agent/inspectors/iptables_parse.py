"""Pure parsers for the iptables/nftables census: ``iptables-save`` text, ``nft -j`` JSON and
kube-proxy's Prometheus metrics. No subprocesses here; a malformed input raises ParseError."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import ParseError

BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
# per-Service / per-endpoint chains are summarised by family in reports (thousands of them otherwise)
_HASHED = re.compile(r"^(KUBE-(?:SVC|SEP|FW|XLB|EXT|SVL)-)[A-Z0-9]{16}$|^(service-|endpoint-|external-|firewall-)")


def chain_group(name: str) -> str:
    m = _HASHED.match(name)
    if m is None:
        return name
    return (m.group(1) or m.group(2)) + "*"


def grouped(counts: dict[str, int]) -> dict[str, cap.ChainRules]:
    """Chain -> rules, with hashed per-Service chains folded into ``PREFIX*`` -> (rules, chains folded)."""
    out: dict[str, cap.ChainRules] = {}
    for name, rules in counts.items():
        g = chain_group(name)
        row = out.setdefault(g, cap.ChainRules())
        row.rules += rules
        if g != name:
            row.folded += 1
    return out


@dataclass
class ChainCount:
    rules: int = 0
    policy: str = "-"  # "-" for user chains


@dataclass
class SaveCensus:
    """One ``iptables-save`` run: table -> chain -> rule count, plus kube-proxy facts of the nat table."""

    tables: dict[str, dict[str, ChainCount]] = field(default_factory=dict)
    kube_services_rules: int = 0
    kube_svc_chains: int = 0
    kube_sep_chains: int = 0
    ipvs_match: bool = False
    warnings: list[str] = field(default_factory=list)

    def rules(self, table: str | None = None) -> int:
        tabs = [self.tables.get(table, {})] if table else list(self.tables.values())
        return sum(c.rules for t in tabs for c in t.values())

    def user_chains(self, table: str | None = None) -> int:
        tabs = [self.tables.get(table, {})] if table else list(self.tables.values())
        return sum(1 for t in tabs for c in t.values() if c.policy == "-")

    @property
    def has_kube_proxy(self) -> bool:
        return "KUBE-SERVICES" in self.tables.get("nat", {})

    def to_proto(self) -> cap.IptablesBackend:
        return cap.IptablesBackend(
            ran=True, rules=self.rules(),
            tables={t: cap.IptablesTable(rules=sum(c.rules for c in chains.values()),
                                         user_chains=sum(1 for c in chains.values() if c.policy == "-"),
                                         chains=grouped({n: c.rules for n, c in chains.items()}))
                    for t, chains in self.tables.items()},
            kube=cap.KubeChains(services_rules=self.kube_services_rules, svc_chains=self.kube_svc_chains,
                                sep_chains=self.kube_sep_chains, ipvs=self.ipvs_match),
            warnings=self.warnings)


def parse_iptables_save(text: str) -> SaveCensus:
    """Count rules per table and chain. Every line must be a comment, ``*table``, ``:chain``,
    ``-A chain ...`` or ``COMMIT``; anything else (or a rule outside a table) is a ParseError."""
    out = SaveCensus()
    table: dict[str, ChainCount] | None = None
    tname = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if line.startswith("-A "):
            if table is None:
                raise ParseError(f"line {n}: rule outside a table: {line[:80]!r}")
            end = line.find(" ", 3)
            chain = line[3:end] if end > 0 else line[3:]
            if end < 0:
                raise ParseError(f"line {n}: rule without a target or match: {line[:80]!r}")
            cc = table.get(chain)
            if cc is None:
                raise ParseError(f"line {n}: rule for undeclared chain {chain!r} in table {tname!r}")
            cc.rules += 1
            if chain == "KUBE-SERVICES" and tname == "nat":
                out.kube_services_rules += 1
                if "--match-set KUBE-CLUSTER-IP" in line:
                    out.ipvs_match = True
        elif line.startswith(":"):
            if table is None:
                raise ParseError(f"line {n}: chain outside a table: {line[:80]!r}")
            parts = line[1:].split()
            if len(parts) < 2 or not parts[0]:
                raise ParseError(f"line {n}: malformed chain declaration {line[:80]!r}")
            table[parts[0]] = ChainCount(policy=parts[1])
            if tname == "nat":
                if parts[0].startswith("KUBE-SVC-"):
                    out.kube_svc_chains += 1
                elif parts[0].startswith("KUBE-SEP-"):
                    out.kube_sep_chains += 1
        elif line.startswith("*"):
            if table is not None:
                raise ParseError(f"line {n}: table {line[1:]!r} starts before {tname!r} was committed")
            tname = line[1:].strip()
            if not tname:
                raise ParseError(f"line {n}: empty table name")
            table = out.tables.setdefault(tname, {})
        elif line == "COMMIT":
            if table is None:
                raise ParseError(f"line {n}: COMMIT outside a table")
            table = None
        elif line.startswith("#"):
            if "Warning" in line or "incompatible" in line:
                out.warnings.append(line.lstrip("# ").strip())
        elif line.strip():
            raise ParseError(f"line {n}: unrecognised iptables-save line {line[:80]!r}")
    if table is not None:
        raise ParseError(f"table {tname!r} not committed (truncated output?)")
    return out


# ---- nftables ---------------------------------------------------------------------------------
@dataclass
class NftTable:
    family: str
    name: str
    chains: dict[str, int] = field(default_factory=dict)
    hooks: dict[str, str] = field(default_factory=dict)
    sets: dict[str, int] = field(default_factory=dict)  # set/map name -> element count
    maps: set[str] = field(default_factory=set)

    @property
    def rules(self) -> int:
        return sum(self.chains.values())

    def to_proto(self) -> cap.NftTable:
        return cap.NftTable(family=self.family, name=self.name, rules=self.rules, chains=len(self.chains),
                            rules_by_chain=grouped(self.chains), hooks=self.hooks,
                            sets={k: cap.NftSet(elements=v, map=k in self.maps) for k, v in self.sets.items()})


@dataclass
class NftCensus:
    tables: dict[str, NftTable] = field(default_factory=dict)  # "family name" -> table
    version: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def rules(self) -> int:
        return sum(t.rules for t in self.tables.values())

    def merge(self, other: NftCensus) -> None:
        self.tables.update(other.tables)
        self.version = self.version or other.version

    def kube_proxy(self) -> cap.NftKubeProxy | None:
        t = self.tables.get("ip kube-proxy") or self.tables.get("ip6 kube-proxy")
        if t is None:
            return None
        return cap.NftKubeProxy(
            table=f"{t.family} {t.name}",
            rules=t.rules,
            service_chains=sum(1 for c in t.chains if c.startswith("service-")),
            endpoint_chains=sum(1 for c in t.chains if c.startswith("endpoint-")),
            service_ips=t.sets.get("service-ips", 0),
        )

    def to_proto(self) -> cap.NftCensus:
        return cap.NftCensus(ran=True, rules=self.rules, version=self.version, errors=self.errors,
                             tables={k: t.to_proto() for k, t in self.tables.items()},
                             kube_proxy=self.kube_proxy())


def parse_nft_json(text: str) -> NftCensus:
    """``nft -j list ruleset`` (or ``list table``) -> rule counts per chain, element counts per set/map."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"nft JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
        raise ParseError("nft JSON: no top-level 'nftables' list")
    out = NftCensus()

    def table(obj: dict[str, Any]) -> NftTable:
        fam, name = obj.get("family"), obj.get("table", obj.get("name"))
        if not isinstance(fam, str) or not isinstance(name, str):
            raise ParseError(f"nft JSON: object without family/table: {str(obj)[:80]}")
        key = f"{fam} {name}"
        if key not in out.tables:
            out.tables[key] = NftTable(family=fam, name=name)
        return out.tables[key]

    for i, item in enumerate(doc["nftables"]):
        if not isinstance(item, dict) or len(item) != 1:
            raise ParseError(f"nft JSON: entry {i} is not a one-key object")
        ((kind, obj),) = item.items()
        if not isinstance(obj, dict):
            raise ParseError(f"nft JSON: entry {i} ({kind}) is not an object")
        if kind == "metainfo":
            out.version = str(obj.get("version", ""))
        elif kind == "table":
            fam, name = obj.get("family"), obj.get("name")
            if not isinstance(fam, str) or not isinstance(name, str):
                raise ParseError(f"nft JSON: table entry {i} without family/name")
            out.tables.setdefault(f"{fam} {name}", NftTable(family=fam, name=name))
        elif kind == "chain":
            t = table(obj)
            cname = obj.get("name")
            if not isinstance(cname, str):
                raise ParseError(f"nft JSON: chain entry {i} without a name")
            t.chains.setdefault(cname, 0)
            if "hook" in obj:
                t.hooks[cname] = f"{obj.get('type', '?')} {obj['hook']} {obj.get('prio', '?')}"
        elif kind == "rule":
            t = table(obj)
            cname = obj.get("chain")
            if not isinstance(cname, str):
                raise ParseError(f"nft JSON: rule entry {i} without a chain")
            t.chains[cname] = t.chains.get(cname, 0) + 1
        elif kind in ("set", "map"):
            t = table(obj)
            sname = str(obj.get("name", ""))
            elems = obj.get("elem", [])
            if not isinstance(elems, list):
                raise ParseError(f"nft JSON: {kind} {sname!r} has a non-list elem")
            t.sets[sname] = len(elems)
            if kind == "map":
                t.maps.add(sname)
    return out


def parse_nft_tables(text: str) -> list[tuple[str, str]]:
    """``nft list tables`` -> [(family, name)]."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[0] != "table":
            raise ParseError(f"nft list tables line {n}: {line[:80]!r}")
        out.append((parts[1], parts[2]))
    return out


# ---- kube-proxy metrics -----------------------------------------------------------------------
@dataclass
class PromSeries:
    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str, prefix: str = "") -> list[PromSeries]:
    """Prometheus text exposition format (the subset kube-proxy emits); ``prefix`` filters names."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if prefix and not line.startswith(prefix):
            continue
        labels: dict[str, str] = {}
        if "{" in line:
            name, _, rest = line.partition("{")
            body, sep, tail = rest.rpartition("}")
            if not sep:
                raise ParseError(f"metrics line {n}: unclosed label set: {line[:80]!r}")
            for part in _split_labels(body):
                k, eq, v = part.partition("=")
                if not eq or len(v) < 2 or v[0] != '"' or v[-1] != '"':
                    raise ParseError(f"metrics line {n}: bad label {part[:40]!r}")
                labels[k.strip()] = v[1:-1]
            fields = tail.split()
        else:
            name, *fields = line.split()
        if not fields:
            raise ParseError(f"metrics line {n}: no value: {line[:80]!r}")
        try:
            value = float(fields[0])
        except ValueError:
            raise ParseError(f"metrics line {n}: bad value {fields[0]!r}") from None
        out.append(PromSeries(name.strip(), labels, value))
    return out


def _split_labels(body: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in body:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus-style quantile from cumulative (le, count) buckets, linear inside a bucket."""
    bs = sorted(buckets)
    if not bs or bs[-1][1] <= 0:
        return None
    total = bs[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in bs:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return bs[-1][0]


SYNC = "kubeproxy_sync_proxy_rules_duration_seconds"


def kube_proxy_figures(text: str) -> cap.KubeProxyMetrics:
    """The sync-duration and rule-count figures from kube-proxy's /metrics."""
    series = parse_prometheus(text, prefix="kubeproxy_")
    if not series:
        raise ParseError("no kubeproxy_* series in the metrics text")
    out = cap.KubeProxyMetrics()
    buckets: list[tuple[float, float]] = []
    ssum = scount = None
    rules: dict[str, float] = {}
    for s in series:
        if s.name == SYNC + "_bucket":
            le = s.labels.get("le", "")
            buckets.append((math.inf if le == "+Inf" else float(le), s.value))
        elif s.name == SYNC + "_sum":
            ssum = s.value
        elif s.name == SYNC + "_count":
            scount = s.value
        elif s.name == "kubeproxy_sync_proxy_rules_iptables_total":
            rules[f"iptables_{s.labels.get('table', 'all')}"] = s.value
        elif s.name.startswith("kubeproxy_sync_proxy_rules_nftables") and s.name.endswith("_total"):
            rules[s.name.removeprefix("kubeproxy_sync_proxy_rules_")] = s.value
        elif s.name == "kubeproxy_sync_proxy_rules_last_timestamp_seconds":
            out.last_sync_unix = s.value
        elif s.name == "kubeproxy_sync_proxy_rules_endpoint_changes_total":
            out.endpoint_changes_total = s.value
        elif s.name == "kubeproxy_sync_proxy_rules_service_changes_total":
            out.service_changes_total = s.value
    if scount:
        out.syncs = scount
        if ssum is not None:
            out.sync_seconds_total = ssum  # cumulative: a window's mean is Δ this / Δ syncs
            out.sync_mean_ms = round(1000 * ssum / scount, 3)
        p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
        if p50 is not None:
            out.sync_p50_ms = round(1000 * p50, 3)
        if p99 is not None:
            out.sync_p99_ms = round(1000 * p99, 3)
    out.rules.update(rules)
    return out
