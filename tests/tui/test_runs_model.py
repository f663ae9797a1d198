"""Runs as the TUI reads them from the Runs API and from recordings, and the comparison's direction,
names and order."""

from __future__ import annotations

from cniscope.api.v1 import runs_pb2
from cniscope.client.run_summary import RunSummary, run_from_dict, run_from_proto, run_to_dict
from cniscope.core.benchmetrics import BETTER, NOISE, WORSE, FigureStat
from cniscope.tui.run_compare import comparison, fmt_value, title


def _run(rid: str, **figs: float) -> RunSummary:
    return RunSummary(rid, rid, figures={k.replace("__", "."): FigureStat(v, v, v) for k, v in figs.items()})


def test_a_stored_run_from_the_api() -> None:
    pb = runs_pb2.Run(run_id="r1", label="E: tuned", status=runs_pb2.RUN_STATUS_DONE,
                      started_unix_nano=1_764_201_600_000_000_000, fingerprint={"cni": "cilium"})
    pb.figures["rtt.p50"].CopyFrom(runs_pb2.FigureStat(median=80.0, min=70.0, max=95.0, n=3))
    r = run_from_proto(pb)
    assert (r.run_id, r.label, r.status, r.created) == ("r1", "E: tuned", "done", "2025-11-27 00:00 UTC")
    assert r.fingerprint == {"cni": "cilium"}
    assert r.figures == {"rtt.p50": FigureStat(80.0, 70.0, 95.0, 3)}
    assert run_from_dict(run_to_dict(r)) == r


def test_catalog_figures_take_their_direction_and_name_from_the_catalog() -> None:
    a = _run("a", tcp__gbps=10.0, rtt__p50=100.0, connect__per_s=1000.0)
    b = _run("b", tcp__gbps=12.0, rtt__p50=120.0, connect__per_s=1005.0)
    verdicts = {name: deltas[0].verdict for name, _vals, deltas in comparison([a, b])}
    assert verdicts == {"tcp.gbps": BETTER, "rtt.p50": WORSE, "connect.per_s": NOISE}
    assert title("rtt.p50") == "RTT p50"
    assert fmt_value("tcp.gbps", 12.0) == "12.00 Gbit/s"


def test_figures_outside_the_catalog_keep_the_old_rules_and_come_last() -> None:
    a = _run("a", rtt_p50_us=4894.0, rtt__p99=300.0, tcp_gbps=12.41, nat__rules=40.0)
    b = _run("b", rtt_p50_us=3135.0, rtt__p99=300.0, tcp_gbps=14.0, nat__rules=40.0)
    rows = comparison([a, b])
    assert [name for name, _v, _d in rows] == ["rtt.p99", "nat.rules", "rtt_p50_us", "tcp_gbps"]
    verdicts = {name: d[0].verdict for name, _v, d in rows}
    assert verdicts["rtt_p50_us"] == BETTER     # lower is better outside the catalog too
    assert verdicts["tcp_gbps"] == BETTER       # …and throughput higher
    assert title("rtt_p50_us") == "rtt_p50_us"
    assert fmt_value("rtt_p50_us", 3135.0) == "3135 µs"
