"""Plain-text renderings shared by the CLI and reports (no terminal library needed); a probe's
headline figures are the ones its row in the probe table (``probekinds``) declares."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from cniscope.core.probekinds import KINDS

STATUS = {0: "?", 1: "connected", 2: "stale", 3: "gone"}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    cells = [[str(h) for h in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        parts = []
        for i, c in enumerate(r):
            right = i < len(align) and align[i] == "r"
            parts.append(c.rjust(widths[i]) if right else c.ljust(widths[i]))
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def ago(ns: int, now_ns: int | None = None) -> str:
    if not ns:
        return "never"
    s = ((now_ns or time.time_ns()) - ns) / 1e9
    if s < 1:
        return "now"
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.0f}h ago"


def nodes_table(nodes: Sequence[Any]) -> str:
    rows = []
    for n in nodes:
        cpu = n.figures.get("agent_cpu_millicores")
        rss = n.figures.get("agent_rss_bytes")
        rows.append([
            n.node, STATUS.get(n.status, "?"), n.host_ip, n.pod_ip, ago(n.last_seen_unix_nano),
            f"{cpu:.1f}" if cpu is not None else "-", f"{rss / 2**20:.0f}" if rss is not None else "-",
            n.agent_version,
        ])
    return table(["NODE", "STATUS", "HOST IP", "POD IP", "LAST SEEN", "CPU m", "RSS MiB", "VERSION"], rows,
                 "llllllrr")


def fmt_figure(key: str, v: float) -> str:
    if key.endswith("_us"):
        return f"{v:.0f} µs" if v >= 10 else f"{v:.1f} µs"
    if key.endswith("_ms"):
        return f"{v:.2f} ms"
    if key.endswith("_pct"):
        return f"{v:.2f} %"
    if key.endswith("_gbps"):
        return f"{v:.3f} Gbit/s"
    if key.endswith("_mbps"):
        return f"{v:.1f} Mbit/s"
    if key.endswith("_per_s"):
        return f"{v:.0f}/s"
    if float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3f}"


def probe_result_text(r: Any) -> str:
    head = f"{r.kind} {r.source_node} → {r.target_node or r.target_address} ({r.path}, {r.target_address})"
    if not r.ok:
        lines = [f"{head}: FAILED — {r.error}"]
    else:
        lines = [f"{head}: ok"]
    for k in sorted(r.figures):
        lines.append(f"  {k:<16} {fmt_figure(k, r.figures[k])}")
    return "\n".join(lines)


def rtt_matrix(nodes: Sequence[str], results: Mapping[tuple[str, str, str], Any]) -> str:
    """RTT p50 per ordered pair and path, as the demo prints it."""
    out = []
    for path in ("host", "pod"):
        rows = []
        for a in nodes:
            row: list[object] = [a]
            for b in nodes:
                if a == b:
                    row.append("·")
                    continue
                r = results.get((path, a, b))
                if r is None:
                    row.append("")
                elif not r.ok:
                    row.append("error")
                else:
                    row.append(f"{r.figures['p50_us']:.0f} µs")
            rows.append(row)
        out.append(f"RTT p50, {path} → {path} (ping, 20 echoes)")
        out.append(table(["from \\ to", *nodes], rows, "l" + "r" * len(nodes)))
        out.append("")
    errors = [f"  {p} {a}→{b}: {r.error}" for (p, a, b), r in results.items() if not r.ok]
    if errors:
        out.append("errors:")
        out.extend(errors)
    return "\n".join(out).rstrip()


def headline_keys(kind: str, figures: Mapping[str, float], limit: int = 3) -> list[str]:
    """The first ``limit`` headline figures the probe table declares for ``kind`` that ``figures``
    holds; for a kind the table does not know, or a result without them, the first names."""
    declared = [f.name for f in KINDS.get(kind).figures] if kind in KINDS else []
    return [k for k in declared if k in figures][:limit] or sorted(figures)[:limit]


def demo_suite_table(results: Sequence[Any]) -> str:
    """One row per probe with its headline figures (whatever of them the probe reported)."""
    rows = []
    for r in results:
        if not r.ok:
            rows.append([r.kind, "error", (r.error or "")[:70]])
            continue
        keys = headline_keys(r.kind, r.figures)
        rows.append([r.kind, "ok", "  ".join(f"{k} {fmt_figure(k, r.figures[k])}" for k in keys)])
    return table(["PROBE", "", "FIGURES"], rows)
