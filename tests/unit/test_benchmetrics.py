"""The pure parts of runs and comparisons: metric keys, medians with min/max, direction-aware deltas
with noise, and ``--fail-if`` thresholds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cniscope.core import benchmetrics as bm
from cniscope.core.errors import ValidationError


def fs(median: float, lo: float | None = None, hi: float | None = None, n: int = 3) -> bm.FigureStat:
    return bm.FigureStat(median, median if lo is None else lo, median if hi is None else hi, n)


@pytest.mark.parametrize(("key", "better", "unit"), [
    ("rtt.p50", bm.LOWER, "µs"), ("tcp.gbps", bm.HIGHER, "Gbit/s"), ("udp.loss_pct", bm.LOWER, "%"),
    ("http@1000.p99", bm.LOWER, "ms"), ("http@5000.qps", bm.HIGHER, "1/s"), ("httpmax.qps", bm.HIGHER, "1/s"),
    ("connect.per_s", bm.HIGHER, "1/s"), ("nat.rules", bm.LOWER, "rules"), ("cni.mem_mib", bm.LOWER, "MiB"),
])
def test_catalog_direction_and_unit(key: str, better: str, unit: str) -> None:
    m = bm.metric(key)
    assert (m.better, m.unit) == (better, unit)


def test_qps_parameter_is_part_of_the_title_and_table() -> None:
    m = bm.metric("http@5000.p99")
    assert "5,000" in m.title
    assert "5,000" in m.table
    assert bm.metric("http@1000.p99").table != m.table


@pytest.mark.parametrize("key", ["rtt", "rtt.p42", "foo.p50", "RTT.P50", "http@x.p99", "rtt.p50.x", ""])
def test_unknown_metric_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError):
        bm.parse_key(key)


def test_sort_follows_the_report_tables() -> None:
    keys = ["dns.p50", "rtt.p99", "tcp.gbps", "http@5000.p99", "http@1000.p99", "rtt.p50", "udp.loss_pct"]
    assert sorted(keys, key=bm.sort_key) == ["tcp.gbps", "udp.loss_pct", "rtt.p50", "rtt.p99",
                                             "http@1000.p99", "http@5000.p99", "dns.p50"]


def test_aggregate_is_median_with_min_max() -> None:
    s = bm.aggregate([3.0, 1.0, 10.0])
    assert (s.median, s.lo, s.hi, s.n) == (3.0, 1.0, 10.0, 3)
    assert bm.aggregate([1.0, 2.0, 3.0, 4.0]).median == 2.5


def test_aggregate_leaves_out_nan_and_refuses_nothing() -> None:
    assert bm.aggregate([math.nan, 5.0]).n == 1
    with pytest.raises(ValueError, match="no values"):
        bm.aggregate([])
    with pytest.raises(ValueError, match="no values"):
        bm.aggregate([math.nan])


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=25))
def test_aggregate_median_within_range(xs: list[float]) -> None:
    s = bm.aggregate(xs)
    assert s.lo <= s.median <= s.hi
    assert s.lo == min(xs)
    assert s.hi == max(xs)
    below = sum(1 for x in xs if x < s.median)
    above = sum(1 for x in xs if x > s.median)
    assert below <= len(xs) / 2
    assert above <= len(xs) / 2


def test_lower_is_better_direction() -> None:
    assert bm.delta("rtt.p50", fs(100, 99, 101), fs(80, 79, 81)).verdict == bm.BETTER
    assert bm.delta("rtt.p50", fs(100, 99, 101), fs(120, 119, 121)).verdict == bm.WORSE


def test_higher_is_better_direction() -> None:
    assert bm.delta("tcp.gbps", fs(10, 9.9, 10.1), fs(12, 11.9, 12.1)).verdict == bm.BETTER
    assert bm.delta("tcp.gbps", fs(10, 9.9, 10.1), fs(8, 7.9, 8.1)).verdict == bm.WORSE


def test_overlapping_spread_is_within_noise_not_an_improvement() -> None:
    d = bm.delta("rtt.p50", fs(100, 90, 130), fs(95, 80, 105))
    assert d.verdict == bm.NOISE
    assert d.pct == pytest.approx(-5.0)


def test_disjoint_ranges_are_a_change_even_when_close() -> None:
    assert bm.delta("rtt.p50", fs(100, 99, 101), fs(103, 102, 104)).verdict == bm.WORSE


def test_tiny_change_without_spread_is_noise() -> None:
    assert bm.delta("tcp.gbps", fs(12.41), fs(12.40)).verdict == bm.NOISE
    assert bm.delta("rtt.p50", fs(4894), fs(3135)).verdict == bm.BETTER


def test_missing_side_is_na_and_zero_baseline_has_no_percentage() -> None:
    assert bm.delta("rtt.p50", None, fs(1)).verdict == bm.NA
    assert bm.delta("rtt.p50", fs(1), None).verdict == bm.NA
    d = bm.delta("udp.loss_pct", fs(0.0), fs(2.0))
    assert d.pct is None
    assert d.verdict == bm.WORSE
    assert d.abs == 2.0


@pytest.mark.parametrize(("text", "key", "op", "value", "mode"), [
    ("rtt.p50 > +10%", "rtt.p50", ">", 10.0, "pct"),
    ("tcp.gbps < -5%", "tcp.gbps", "<", -5.0, "pct"),
    ("rtt.p99>+500", "rtt.p99", ">", 500.0, "delta"),
    ("udp.loss_pct >= 1", "udp.loss_pct", ">=", 1.0, "value"),
    ("  http@1000.p99 <= 12.5  ", "http@1000.p99", "<=", 12.5, "value"),
])
def test_threshold_parser(text: str, key: str, op: str, value: float, mode: str) -> None:
    t = bm.parse_threshold(text)
    assert (t.key, t.op, t.value, t.mode) == (key, op, value, mode)


@pytest.mark.parametrize("text", ["rtt.p50", "rtt.p50 >", "> 10%", "rtt.p50 = 10", "rtt.p50 > 10%%",
                                  "nope.p50 > 1", "rtt.p50 > ten", "rtt.p50 >> 1"])
def test_threshold_parser_refuses_garbage(text: str) -> None:
    with pytest.raises(ValidationError):
        bm.parse_threshold(text)


def test_relative_threshold_crosses_exactly_past_the_line() -> None:
    t = bm.parse_threshold("rtt.p50 > +10%")
    assert t.check(fs(100), fs(110))[0] is False          # exactly +10% is not more than +10%
    assert t.check(fs(100), fs(110.01))[0] is True
    assert t.check(fs(100), fs(50))[0] is False
    crossed, why = t.check(fs(100), fs(120))
    assert crossed
    assert "rtt.p50" in why
    assert "+20.0%" in why


def test_negative_relative_threshold_for_higher_is_better() -> None:
    t = bm.parse_threshold("tcp.gbps < -5%")
    assert t.check(fs(10), fs(9.6))[0] is False
    assert t.check(fs(10), fs(9.4))[0] is True


def test_absolute_delta_and_value_thresholds() -> None:
    assert bm.parse_threshold("rtt.p50 > +500").check(fs(1000), fs(1501))[0] is True
    assert bm.parse_threshold("rtt.p50 > +500").check(fs(1000), fs(1499))[0] is False
    assert bm.parse_threshold("udp.loss_pct > 1").check(None, fs(1.5))[0] is True
    assert bm.parse_threshold("udp.loss_pct > 1").check(None, fs(0.5))[0] is False


def test_unmeasured_figure_never_crosses() -> None:
    t = bm.parse_threshold("rtt.p50 > +10%")
    assert t.check(None, fs(1))[0] is False
    assert t.check(fs(1), None)[0] is False
    assert t.check(fs(0), fs(5))[0] is False


def test_evaluate_names_each_metric() -> None:
    ts = [bm.parse_threshold("rtt.p50 > +10%"), bm.parse_threshold("tcp.gbps < -10%")]
    out = bm.evaluate(ts, {"rtt.p50": fs(100), "tcp.gbps": fs(10)}, {"rtt.p50": fs(150), "tcp.gbps": fs(10)})
    assert [(t.key, crossed) for t, crossed, _ in out] == [("rtt.p50", True), ("tcp.gbps", False)]


def test_figure_stat_dict_round_trip() -> None:
    s = fs(5, 4, 6)
    assert bm.FigureStat.from_dict(s.to_dict()) == s
    assert bm.FigureStat.from_dict(7.0) == bm.FigureStat(7.0, 7.0, 7.0, 1)


def test_formatting() -> None:
    assert bm.fmt("rtt.p50", 4894.0) == "4,894 µs"
    assert bm.fmt("udp.loss_pct", 20.39) == "20.39 %"
    assert bm.fmt("nat.rules", 10059) == "10,059"
    assert bm.fmt("rtt.p50", None) == "-"
    assert bm.fmt_pct(-35.94) == "-36%"
    assert bm.fmt_pct(-9.01) == "-9.0%"
    assert bm.fmt_pct(None) == "-"
