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
        out.append([backend, f"{r['services']:,}", f"{r['rules']:,}", f"{r['sync_ms']:.0f} ms", _proxy_cell(r),
                    f"{mean:.1f} µs" if isinstance(mean, float) else "failed",
                    f"{p50:.1f} µs" if isinstance(p50, float) else "-",
                    f"{p99:.1f} µs" if isinstance(p99, float) else "-", _kernel_cell(r), *cells,
                    f"{r['walk_floor_us']:+.1f} µs" if isinstance(r.get("walk_floor_us"), float) else "-",
                    str(r.get("verdict_walk", "-")), *_cni_cells(r)])
    return out


def _num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _kernel_cell(r: dict[str, Any]) -> str:
    """The tracer's mean with its Δcount; '*' when that is not the probe's own count."""
    k = r.get("kernel_setup_mean_us")
    if _num(k):
        odd = "*" if r.get("kernel_connects") != r.get("kernel_probe_connects") else ""
        return f"{k:.1f} µs ×{r['kernel_connects']:,}{odd}"
    return "not running" if "not running" in str(r.get("kernel_note", "")) else "-"


def _proxy_cell(r: dict[str, Any]) -> str:
    v = r.get("proxy_sync_ms")
    if _num(v):
        return f"{v:.0f} ms ×{r.get('proxy_syncs', 0):g}"
    return "n/a" if str(r.get("proxy_note", "")).startswith("does not apply") else "-"


def _cni_cells(r: dict[str, Any]) -> list[str]:
    cpu = [r.get(f"cni_cpu_{p}_m") for p in ("load", "measure")]
    rss = r.get("cni_rss_measure_mib", r.get("cni_rss_load_mib"))
    return [" / ".join(f"{c:.0f} m" if _num(c) else "-" for c in cpu) if any(_num(c) for c in cpu) else "-",
            f"{rss:.1f} MiB" if _num(rss) else "-"]


HEADS = ["backend", "services", "NAT rules", "sync", "kube-proxy sync", "setup mean", "setup p50", "setup p99",
         "kernel setup mean", "Δ mean vs smallest N", "Δ p50 vs smallest N", "last − first Service",
         "walk vs smallest N", "CNI CPU load / measure", "CNI RSS"]
NOTES = (("kernel_note", "in-kernel setup (tcpconnlat)"), ("proxy_note", "kube-proxy sync"),
         ("cni_note", "CNI footprint"))


def _notes(sc: dict[str, Any]) -> list[str]:
    """Why a column is empty or marked, once per backend and reason, with the Service counts it concerns."""
    out = []
    for b, d in sc.items():
        for key, label in NOTES:
            by: dict[str, list[str]] = {}
            for r in d["rows"]:
                if r.get(key):
                    by.setdefault(str(r[key]), []).append(f"{r['services']:,}")
            for note, ns in by.items():
                where = "every N" if len(ns) == len(d["rows"]) else f"N = {', '.join(ns)}"
                out.append(f"{b}, {label} ({where}): {note}")
    return out


def _slope(data: dict[str, Any]) -> str:
    parts = []
    for stat in ("mean", "p50", "walk", "kernel"):
        s = data.get(f"slope_{stat}_ns_per_rule")
        if stat != "kernel" or s is not None:
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
    notes = _notes(sc)
    if fmt == "markdown":
        out = [f"# Service scaling: {run_label}", "", "| " + " | ".join(HEADS) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(HEADS) - 1)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out += ["", "Slope: " + "; ".join(slopes), *(["", *(f"- {n}" for n in notes)] if notes else []),
                "", *published_lines()]
        return "\n".join(out) + "\n"
    if fmt == "html":
        e = html.escape
        b = [f"<h1>Service scaling: {e(run_label)}</h1><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADS)
             + "</tr>"]
        b += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        b.append("</table><p>Slope: " + e("; ".join(slopes)) + "</p>")
        if notes:
            b.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
        b.append("<div class=\"charts\">")
        for backend, d in sc.items():
            labels = [f"{r['services']:,} Services ({r['rules']:,} rules)" for r in d["rows"]]
            b.append(svg.bars(f"pod → Service connect setup, {backend}", labels,
                              [r.get("setup_p50_us") for r in d["rows"]], unit="µs",
                              lo=[r.get("setup_p50_min_us") for r in d["rows"]],
                              hi=[r.get("setup_p50_max_us") for r in d["rows"]],
                              subtitle=f"median setup over the repetitions (line: min–max) · slope {_slope(d)}"))
            if any(_num(r.get("kernel_setup_mean_us")) for r in d["rows"]):
                b.append(svg.bars(f"in-kernel connect setup (tcpconnlat), {backend}", labels,
                                  [r.get("kernel_setup_mean_us") for r in d["rows"]], unit="µs",
                                  lo=[r.get("kernel_setup_mean_min_us") for r in d["rows"]],
                                  hi=[r.get("kernel_setup_mean_max_us") for r in d["rows"]],
                                  subtitle="SYN_SENT → ESTABLISHED, Δsum / Δcount of the source node's tracer"))
            b.append(svg.bars(f"NAT rules, {backend}", labels, [float(r["rules"]) for r in d["rows"]], unit="rules"))
        b.append("</div><pre>" + e("\n".join(published_lines())) + "</pre>")
        return page(f"cniscope service scaling: {run_label}", "".join(b))
    out = [f"service scaling: {run_label} (setup to the last Service created; 'last − first' is measured in the "
           "same repetition, so machine load cancels out; kernel = the source node's tcpconnlat tracer, "
           "×Δcount, * when that differs from the probe's connects)",
           table(HEADS, rows, "ll" + "r" * (len(HEADS) - 2)), "", "slope: " + "; ".join(slopes),
           *([""] + notes if notes else []), "", *published_lines()]
    return "\n".join(out) + "\n"
