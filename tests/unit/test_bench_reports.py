"""Comparison rendering: terminal table with direction-aware colour, JSON, Markdown, and one
self-contained HTML page (inline SVG, nothing fetched)."""

from __future__ import annotations

import json
import re
import xml.dom.minidom

import pytest

from cniscope.collector.reports import FORMATS, render
from cniscope.collector.reports.report_model import RunView, compare
from cniscope.collector.reports.scaling import render_scaling
from cniscope.collector.runs.scaling_detail import scaling_detail, slope_ns_per_rule
from cniscope.core import benchmetrics as bm


def views() -> list[RunView]:
    f = bm.FigureStat
    a = RunView("aaa", "A: <base> & co", {"rtt.p50": f(100, 98, 102), "tcp.gbps": f(4.0, 3.9, 4.1),
                                          "udp.loss_pct": f(0.5, 0.4, 0.6)})
    b = RunView("bbb", "B: tuned", {"rtt.p50": f(2100, 2090, 2110), "tcp.gbps": f(4.05, 3.95, 4.2),
                                    "dns.p50": f(1.0, 1.0, 1.0)}, skipped=[("udp", "probe missing")])
    return [a, b]


def test_compare_rows_and_verdicts() -> None:
    c = compare(views(), 0, [bm.parse_threshold("rtt.p50 > +10%")])
    rows = {r.key: r for _, rs in c.tables for r in rs}
    assert rows["rtt.p50"].deltas[1] is not None
    assert rows["rtt.p50"].deltas[1].verdict == bm.WORSE
    assert rows["tcp.gbps"].deltas[1] is not None
    assert rows["tcp.gbps"].deltas[1].verdict == bm.NOISE
    assert rows["udp.loss_pct"].values[1] is None
    assert rows["dns.p50"].values[0] is None
    assert [g.text for g in c.failed] == ["rtt.p50 > +10%"]


def test_baseline_choice_changes_deltas() -> None:
    c = compare(views(), 1)
    rtt = next(r for _, rs in c.tables for r in rs if r.key == "rtt.p50")
    assert rtt.deltas[1] is None
    assert rtt.deltas[0] is not None
    assert rtt.deltas[0].verdict == bm.BETTER


def test_table_marks_noise_and_colours_by_direction() -> None:
    c = compare(views(), 0)
    plain = render(c, "table")
    assert "within noise" in plain
    assert "worse" in plain
    assert "\x1b[" not in plain
    coloured = render(c, "table", color=True)
    assert "\x1b[31m" in coloured  # RTT went up: red
    assert "skipped udp: probe missing" in plain


def test_json_is_complete() -> None:
    d = json.loads(render(compare(views(), 0), "json"))
    assert [r["id"] for r in d["runs"]] == ["aaa", "bbb"]
    rtt = next(r for t in d["tables"] for r in t["rows"] if r["metric"] == "rtt.p50")
    assert rtt["values"][0] == {"median": 100, "min": 98, "max": 102, "n": 1}
    assert rtt["deltas"][0] is None
    assert rtt["deltas"][1]["verdict"] == "worse"


def test_markdown_tables() -> None:
    md = render(compare(views(), 0), "markdown")
    assert "| Metric | A: <base> & co (baseline) | B: tuned | Δ |" in md
    assert "🔴" in md
    assert "within noise" in md


def test_html_is_self_contained_and_escaped() -> None:
    page = render(compare(views(), 0), "html")
    assert "A: &lt;base&gt; &amp; co" in page
    assert "<base>" not in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page
    assert "url(" not in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 4  # one chart per figure
    for s in svgs:
        xml.dom.minidom.parseString(s)  # well-formed
    for metric_title in ("RTT p50", "TCP throughput", "UDP loss", "DNS p50"):
        assert metric_title in page


def test_unknown_format_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(compare(views(), 0), "pdf")
    assert FORMATS == ("table", "json", "markdown", "html")


def test_slope_least_squares() -> None:
    assert slope_ns_per_rule([(48, 100.0), (1048, 110.0), (10008, 199.6)]) == pytest.approx(10.0, rel=1e-3)
    assert slope_ns_per_rule([(48, 100.0)]) is None
    assert slope_ns_per_rule([(5, 1.0), (5, 2.0)]) is None


def _row(n: int, rules: int, mean: float, spread: float) -> dict[str, object]:
    return {"services": n, "rules": rules, "sync_ms": 10.0, "setup_mean_us": mean, "setup_mean_min_us": mean - spread,
            "setup_mean_max_us": mean + spread, "setup_p50_us": mean, "setup_p50_min_us": mean - spread,
            "setup_p50_max_us": mean + spread, "setup_p99_us": mean * 3}


def test_scaling_detail_and_renderings() -> None:
    det = scaling_detail({"iptables-nft": [_row(4, 48, 80.0, 2), _row(104, 1048, 90.0, 2), _row(1000, 10008, 300.0, 5)],
                          "nft": [_row(4, 37, 80.0, 5), _row(1000, 7009, 82.0, 5)]})
    ipt = det["scaling"]["iptables-nft"]  # type: ignore[index]
    assert ipt["rows"][0]["verdict_mean"] == "baseline"
    assert ipt["rows"][2]["verdict_mean"] == "worse"
    assert ipt["rows"][2]["delta_mean_us"] == pytest.approx(220.0)
    assert det["scaling"]["nft"]["rows"][1]["verdict_mean"] == "within noise"  # type: ignore[index]
    assert ipt["slope_ns_per_rule"] > 20
    text = render_scaling("lab", det, "table")
    assert "10,008" in text
    assert "within noise" in text
    assert "ns per rule" in text
    assert "10,059" in text
    page = render_scaling("lab", det, "html")
    assert page.count("<svg") == 4
    assert "<script" not in page
    assert json.loads(render_scaling("lab", det, "json"))["published"]["kube-proxy"][0]["nat_rules"] == 99


def test_scaling_renderings_carry_kernel_proxy_and_footprint() -> None:
    rows = [_row(4, 48, 80.0, 2), _row(1000, 10008, 300.0, 5)]
    for r, k in zip(rows, (40.0, 120.0), strict=True):
        r.update(kernel_setup_mean_us=k, kernel_setup_mean_min_us=k - 1, kernel_setup_mean_max_us=k + 1,
                 kernel_connects=600, kernel_probe_connects=600, proxy_note="does not apply: no kube-proxy in the lab",
                 cni_cpu_load_m=35.0, cni_cpu_measure_m=4.0, cni_rss_measure_mib=61.2)
    rows[1]["kernel_connects"] = 603
    det = scaling_detail({"iptables-nft": rows})
    assert det["scaling"]["iptables-nft"]["slope_kernel_ns_per_rule"] == pytest.approx(  # type: ignore[index]
        80_000 / 9960, rel=1e-3)
    text = render_scaling("lab", det, "table")
    assert "40.0 µs ×600 " in text
    assert "120.0 µs ×603*" in text  # the tracer's count differs from the probe's
    assert "35 m / 4 m" in text
    assert "61.2 MiB" in text
    assert "kube-proxy sync (every N): does not apply" in text
    assert "kernel 8.03 ns per rule" in text
    md = render_scaling("lab", det, "markdown")
    assert "| n/a | 80.0 µs |" in md
    page = render_scaling("lab", det, "html")
    assert page.count("<svg") == 3
    assert "in-kernel connect setup (tcpconnlat)" in page
