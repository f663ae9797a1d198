"""The service-scaling table (rules, sync, connect setup mean/p99, Δ vs the smallest N, slope in ns
per rule) as text, Markdown, JSON or HTML with a chart; the published table alongside."""

from __future__ import annotations

import html
import json
from typing import Any

from cniscope.collector import reference
from cniscope.collector.reports import svg
from cniscope.collector.reports.html import page
from cniscope.core import benchmetrics as bm
from cniscope.core.render import table


def _rows(backend: str, data: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in data["rows"]:
        mean = r.get("setup_mean_us")
        p50 = r.get("setup_p50_us")
        p99 = r.get("setup_p99_us")
        cells = []
        for stat in ("mean", "p50"):
            if r.get(f"verdict_{stat}") == "baseline" or r.get(f"delta_{stat}_us") is None:
                cells.append("baseline" if r.get(f"verdict_{stat}") == "baseline" else "-")
            else:
                cells.append(f"{r[f'delta_{stat}_us']:+.1f} µs ({bm.fmt_pct(r[f'delta_{stat}_pct'])}) "
                             f"{r[f'verdict_{stat}']}")
        out.append([backend, f"{r['services']:,}", f"{r['rules']:,}", f"{r['sync_ms']:.0f} ms",
                    f"{mean:.1f} µs" if isinstance(mean, float) else "failed",
                    f"{p50:.1f} µs" if isinstance(p50, float) else "-",
                    f"{p99:.1f} µs" if isinstance(p99, float) else "-", *cells,
                    f"{r['walk_floor_us']:+.1f} µs" if isinstance(r.get("walk_floor_us"), float) else "-",
                    str(r.get("verdict_walk", "-"))])
    return out


HEADS = ["backend", "services", "NAT rules", "sync", "setup mean", "setup p50", "setup p99", "Δ mean vs smallest N",
         "Δ p50 vs smallest N", "last − first Service",
         "walk vs smallest N"]


def _slope(data: dict[str, Any]) -> str:
    parts = []
    for stat in ("mean", "p50", "walk"):
        s = data.get(f"slope_{stat}_ns_per_rule")
        parts.append(f"{stat} {s:.2f} ns per rule" if isinstance(s, int | float) else f"{stat} n/a")
    return ", ".join(parts)


def published_lines() -> list[str]:
    pub = reference.scaling()
    rows = [[f"{r['services']:,}", f"{r['nat_rules']:,}", f"~{r['sync_ms']} ms",
             f"{r['setup_mean_us']} µs" if "setup_mean_us" in r else "-"] for r in pub["kube-proxy"]]
    return ["published (report-2026-02, kube-proxy iptables mode on EKS, scenario A):",
            table(["services", "NAT rules", "sync", "setup mean"], rows, "rrrr"),
            "  4 → 1,000 Services: +26 µs (+16%) per connection, 101× NAT rules"]


def _signals(sc: dict[str, Any]) -> list[str]:
    """Where the "NAT rules" column counts something else (a Kubernetes run on Cilium's BPF map)."""
    out = []
    for b, d in sc.items():
        other = sorted({str(r.get("signal")) for r in d["rows"] if r.get("signal") not in (None, "", "NAT rules")})
        if other:
            out.append(f"{b}: the NAT rules column counts {', '.join(other)}")
    return out


def render_scaling(run_label: str, detail: dict[str, Any], fmt: str) -> str:
    sc: dict[str, Any] = detail.get("scaling", {})
    if fmt == "json":
        return json.dumps({"label": run_label, **detail, "published": reference.scaling()}, indent=2) + "\n"
    rows = [r for b, d in sc.items() for r in _rows(b, d)]
    slopes = [f"{b}: {_slope(d)}" for b, d in sc.items()] + _signals(sc)
    if fmt == "markdown":
        out = [f"# Service scaling: {run_label}", "", "| " + " | ".join(HEADS) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(HEADS) - 1)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out += ["", "Slope: " + "; ".join(slopes), "", *published_lines()]
        return "\n".join(out) + "\n"
    if fmt == "html":
        e = html.escape
        b = [f"<h1>Service scaling: {e(run_label)}</h1><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADS)
             + "</tr>"]
        b += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        b.append("</table><p>Slope: " + e("; ".join(slopes)) + "</p><div class=\"charts\">")
        for backend, d in sc.items():
            labels = [f"{r['services']:,} Services ({r['rules']:,} rules)" for r in d["rows"]]
            b.append(svg.bars(f"pod → Service connect setup, {backend}", labels,
                              [r.get("setup_p50_us") for r in d["rows"]], unit="µs",
                              lo=[r.get("setup_p50_min_us") for r in d["rows"]],
                              hi=[r.get("setup_p50_max_us") for r in d["rows"]],
                              subtitle=f"median setup over the repetitions (line: min–max) · slope {_slope(d)}"))
            b.append(svg.bars(f"NAT rules, {backend}", labels, [float(r["rules"]) for r in d["rows"]], unit="rules"))
        b.append("</div><pre>" + e("\n".join(published_lines())) + "</pre>")
        return page(f"cniscope service scaling: {run_label}", "".join(b))
    out = [f"service scaling: {run_label} (setup to the last Service created; 'last − first' is measured in the "
           "same repetition, so machine load cancels out)", table(HEADS, rows, "llrrrrrrrrr"), "", "slope: " + "; ".join(slopes), "",
           *published_lines()]
    return "\n".join(out) + "\n"
