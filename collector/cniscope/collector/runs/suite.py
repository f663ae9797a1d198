"""Probe suites: which probe, on which path, with which parameters, yielding which figures.

The probe items come from the probe table (``probekinds``): each kind's benchmark groups say which
parameters it runs with in each suite and which figures feed which metrics. ``standard`` follows the
published study (iperf3 10 s, HTTP at 1,000 and 5,000 QPS and max QPS, 100 DNS lookups); ``quick``
is the same shape with short durations and modest rates, for labs, CI and small machines. The
pseudo-items ``footprint`` (CNI agent samples during the run) and ``census`` (NAT rules from the
agents' iptables/nft census) need no probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cniscope.core.errors import ValidationError
from cniscope.core.params import ParamValues
from cniscope.core.probekinds import KINDS
from cniscope.core.probespec import SUITE_NAMES, BenchGroup, ProbeSpec

NODE_ITEMS = ("footprint", "census")


@dataclass(frozen=True)
class Item:
    name: str
    kind: str                                   # probe kind, or "footprint" / "census"
    figures: Mapping[str, str]                  # metric key → the probe's figure name
    params: ParamValues | None = None           # a probe item's parameters, parsed and bounded
    path: str = "pod"
    needs_target: bool = True

    @property
    def is_probe(self) -> bool:
        return self.kind not in NODE_ITEMS


def _probe_items(spec: ProbeSpec, group: BenchGroup, suite: str) -> list[Item]:
    out = []
    for raw in group.suites.get(suite, ()):
        values = spec.params.validate(raw)
        name = f"{group.group}@{values[group.arg_param]}" if group.arg_param else group.group
        out.append(Item(name, spec.kind, {f"{name}.{f.metric}": f.figure for f in group.figures}, values,
                        path=group.path, needs_target=spec.needs_target))
    return out


_NODE_ITEMS = (
    Item("footprint", "footprint", {"cni.cpu_m": "cni_cpu_millicores", "cni.mem_mib": "cni_rss_bytes"},
         needs_target=False),
    Item("census", "census", {"nat.rules": "nat_rules"}, needs_target=False),
)


def suite_items(suite: str) -> list[Item]:
    """Every item of ``suite``: the probe kinds' in the probe table's order, then the node items."""
    if suite not in SUITE_NAMES:
        raise ValidationError(f"unknown suite {suite!r}; one of {', '.join(SUITE_NAMES)}")
    out = [i for spec in KINDS for g in spec.benchmarks for i in _probe_items(spec, g, suite)]
    return out + list(_NODE_ITEMS)


def items(suite: str, only: list[str] | tuple[str, ...] = ()) -> list[Item]:
    all_items = suite_items(suite or "standard")
    if not only:
        return all_items
    names = {i.name for i in all_items}
    bad = [o for o in only if o not in names]
    if bad:
        raise ValidationError(f"suite {suite} has no item {', '.join(bad)}; items: {', '.join(sorted(names))}")
    return [i for i in all_items if i.name in only]


def choose_pairs(nodes: list[str], spec: str) -> list[tuple[str, str]]:
    """``auto``: one cross-node pair (the first two nodes by name); ``all``: a ring over every node;
    or an explicit ``a:b,c:d`` list."""
    nodes = sorted(nodes)
    spec = (spec or "auto").strip()
    if spec in ("auto", "all"):
        if len(nodes) < 2:
            raise ValidationError(f"a run needs two connected nodes, have {len(nodes)}")
        if spec == "auto":
            return [(nodes[0], nodes[1])]
        return [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))] if len(nodes) > 2 \
            else [(nodes[0], nodes[1])]
    out = []
    for part in spec.split(","):
        a, sep, b = part.strip().partition(":")
        if not sep or not a or not b or a == b:
            raise ValidationError(f"pair {part!r} is not SOURCE:TARGET with two different nodes")
        for n in (a, b):
            if n not in nodes:
                raise ValidationError(f"node {n!r} is not connected ({', '.join(nodes) or 'none'})")
        out.append((a, b))
    return out
