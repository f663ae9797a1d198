"""One N of a service-scaling run: what its repetitions measured, and the table row they make.

A row carries the userspace connect setup (mean, p50, p99 as median with min/max over the
repetitions), the walk from the first to the last Service, the source node's in-kernel setup from
its tracer (:mod:`.kernel_setup`), kube-proxy's own sync time (:func:`proxy_row`) and the CNI
agents' footprint while the step was loaded and measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cniscope.api.v1 import common_pb2
from cniscope.collector.runs.kernel_setup import KernelSetup
from cniscope.collector.runs.service_backend import Applied
from cniscope.core import benchmetrics as bm
from cniscope.core import stats


@dataclass
class ScalingStep:
    """What one N measured over the repetitions."""

    applied: Applied | None = None
    syncs: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    heads: list[float] = field(default_factory=list)
    walks: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kernel: list[KernelSetup] = field(default_factory=list)       # the last Service, per repetition
    kernel_heads: list[KernelSetup] = field(default_factory=list)  # the first Service
    proxy: list[Applied] = field(default_factory=list)            # every repetition's kube-proxy figures
    windows: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {"load": [], "measure": []})
    footprint: dict[str, object] = field(default_factory=dict)

    def add(self, res: common_pb2.ProbeResult, head: common_pb2.ProbeResult | None) -> None:
        if not (res.ok and "p50_us" in res.figures):
            self.errors.append(res.error or "no connection succeeded")
            return
        self.means.append(res.figures.get("mean_us", math.nan))
        self.p50s.append(res.figures["p50_us"])
        self.p99s.append(res.figures.get("p99_us", math.nan))
        if head is not None and head.ok and "p50_us" in head.figures:
            self.heads.append(head.figures["p50_us"])
            self.walks.append(res.figures["p50_us"] - head.figures["p50_us"])

    def row(self, n: int) -> dict[str, object]:
        assert self.applied is not None
        a = self.applied
        row: dict[str, object] = {
            "services": n, "rules": max(a.rules.values()) if a.rules else 0, "rules_per_node": a.rules,
            "sync_ms": round(stats.median(self.syncs) * 1000, 1), "target": a.target_ip, "first": a.first_ip,
            "signal": a.signal, "repeat": len(self.p50s)}
        if self.p50s:
            mean, p50 = bm.aggregate(self.means), bm.aggregate(self.p50s)
            row.update(setup_mean_us=mean.median, setup_mean_min_us=mean.lo, setup_mean_max_us=mean.hi,
                       setup_p50_us=p50.median, setup_p50_min_us=p50.lo, setup_p50_max_us=p50.hi,
                       setup_p99_us=bm.aggregate(self.p99s).median)
        if self.walks:
            w = bm.aggregate(self.walks)
            row.update(walk_p50_us=w.median, walk_p50_min_us=w.lo, walk_p50_max_us=w.hi,
                       first_p50_min_us=min(self.heads),
                       # load only ever adds latency: the floors are the steadiest estimate
                       walk_floor_us=min(self.p50s) - min(self.heads))
        row.update(self._kernel_row())
        row.update(proxy_row(self.proxy))
        row.update(self.footprint)
        if self.errors:
            row["errors"] = self.errors[:3]
        return row

    def _kernel_row(self) -> dict[str, object]:
        """The tracer's mean setup over the repetitions it measured, its Δcount against the probes'."""
        out: dict[str, object] = {}
        got = [k for k in self.kernel if k.mean_us is not None]
        if got:
            m = bm.aggregate([k.mean_us for k in got if k.mean_us is not None])
            out.update(kernel_setup_mean_us=round(m.median, 1), kernel_setup_mean_min_us=round(m.lo, 1),
                       kernel_setup_mean_max_us=round(m.hi, 1), kernel_connects=sum(k.connects for k in got),
                       kernel_probe_connects=sum(k.probe_connects for k in got), kernel_repeat=len(got))
        pairs = [(k.mean_us, h.mean_us) for k, h in zip(self.kernel, self.kernel_heads, strict=False)
                 if k.mean_us is not None and h.mean_us is not None]
        if pairs:
            out["kernel_first_mean_us"] = round(stats.median([h for _, h in pairs]), 1)
            out["kernel_walk_us"] = round(stats.median([k - h for k, h in pairs]), 1)
        notes = list(dict.fromkeys(k.note for k in self.kernel if k.note))
        if notes:
            out["kernel_note"] = "; ".join(notes)
        return out


def proxy_row(applied: list[Applied]) -> dict[str, object]:
    """kube-proxy's own sync time during the step: per repetition the slowest node's mean sync
    (Δ seconds / Δ syncs), the median over repetitions; and the syncs per node."""
    worst: list[float] = []
    syncs: list[float] = []
    for a in applied:
        per = [(n, t) for n, t in a.proxy_sync.values() if n > 0]
        if per:
            worst.append(max(1000 * t / n for n, t in per))
            syncs.append(stats.median([n for n, _ in per]))
    out: dict[str, object] = {}
    if worst:
        w = bm.aggregate(worst)
        out.update(proxy_sync_ms=round(w.median, 1), proxy_sync_min_ms=round(w.lo, 1),
                   proxy_sync_max_ms=round(w.hi, 1), proxy_syncs=stats.median(syncs))
    elif any(a.proxy_sync for a in applied):
        out["proxy_note"] = "kube-proxy did not sync during the step"
    notes = ([str(out.pop("proxy_note"))] if "proxy_note" in out else []) + \
        list(dict.fromkeys(a.proxy_note for a in applied if a.proxy_note))
    if notes:
        out["proxy_note"] = "; ".join(notes)
    return out
