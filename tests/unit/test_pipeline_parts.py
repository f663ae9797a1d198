"""Rate limiter, clock-skew estimate, retention and message checks, each against worked figures."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.collector import retention
from cniscope.collector.aggregates import read_aggregates
from cniscope.collector.clockskew import SkewTracker
from cniscope.collector.ratelimit import TokenBucket
from cniscope.collector.store import Store, read_samples
from cniscope.collector.validate import Refused, check_batch, check_hello
from cniscope.core import grpcutil

MIN = retention.MINUTE_NS


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_burst_then_rate() -> None:
    clk = FakeClock()
    tb = TokenBucket(rate=5, burst=20, clock=clk)
    taken = 0
    for i in range(100):  # 100 calls spread over one second
        clk.t = 1000.0 + i / 100
        taken += tb.take() == 0.0
    # 20 from the burst + 5/s over 0.99 s (the first whole tokens at 0.2, 0.4, 0.6, 0.8 s)
    assert taken == 24
    assert tb.refused == 76
    clk.t += 1.0  # one quiet second refills five tokens, and says how long to wait for the sixth
    assert [tb.take() == 0.0 for _ in range(5)] == [True] * 5
    wait = tb.take()
    assert 0 < wait <= 0.2


def test_skew_estimate_ignores_batches_that_waited_in_a_spool() -> None:
    sk = SkewTracker()
    recv = 10**18
    assert sk.observe("n", recv + 80_000_000 - 300_000, recv) == pytest.approx(79.7)  # 80 ms ahead, 0.3 ms delay
    # a batch sealed 30 s ago and resent now says -29.92 s; the estimate stays at the fresh one
    assert sk.observe("n", recv - 30_000_000_000 + 80_000_000, recv) == pytest.approx(79.7)
    assert sk.flagged(79.7)
    assert not sk.flagged(-49.0)
    assert sk.flagged(-51.0)


def _samples_db(tmp_path: Path) -> Store:
    st = Store(tmp_path / "r.db")
    hello = agent_pb2.Hello(node="n1", boot_id="b1")
    st.record_hello(hello, 0)
    t0 = 100 * MIN
    for seq in range(1, 181):  # 3 minutes at 1 Hz, value = seq
        b = agent_pb2.Batch(boot_id="b1", seq=seq, time_unix_nano=t0 + (seq - 1) * 10**9,
                            samples=[common_pb2.Sample(name="cpu", value=float(seq),
                                                       time_unix_nano=t0 + (seq - 1) * 10**9)])
        assert st.commit_batch("n1", b, t0 + seq * 10**9)
    return st


def test_retention_turns_old_samples_into_minute_aggregates(tmp_path: Path) -> None:
    st = _samples_db(tmp_path)
    cutoff = 102 * MIN + 30 * 10**9  # mid-minute: only whole minutes before it are pruned
    rep = retention.prune_node(st.conn, "n1", cutoff, st.watermarks)
    assert rep.samples_deleted == 120
    rows = [(r.minute, r.n, r.vmin, r.vmean, r.vmax) for r in read_aggregates(st.conn, 0, 200 * MIN)]
    assert rows == [(100, 60, 1.0, 30.5, 60.0), (101, 60, 61.0, 90.5, 120.0)]
    left = [r.value for r in read_samples(st.conn, 0, 200 * MIN)]
    assert (len(left), min(left)) == (60, 121.0)
    assert st.conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 60
    # a batch resent after its row was pruned is still a duplicate
    again = agent_pb2.Batch(boot_id="b1", seq=5, time_unix_nano=1, samples=[common_pb2.Sample(name="cpu", value=1)])
    assert st.commit_batch("n1", again, 1) is False
    assert st.record_hello(agent_pb2.Hello(node="n1", boot_id="b1"), 1) == 180
    st.close()
    reopened = Store(tmp_path / "r.db")  # the watermark is durable
    assert reopened.commit_batch("n1", again, 1) is False
    reopened.close()


def test_retention_merges_into_an_existing_minute(tmp_path: Path) -> None:
    st = _samples_db(tmp_path)
    retention.prune_node(st.conn, "n1", 101 * MIN, st.watermarks)
    late = agent_pb2.Batch(boot_id="b2", seq=1, time_unix_nano=100 * MIN,
                           samples=[common_pb2.Sample(name="cpu", value=1000.0, time_unix_nano=100 * MIN + 5)])
    st.commit_batch("n1", late, 0)
    retention.prune_node(st.conn, "n1", 101 * MIN, st.watermarks)
    (_, _, _, _, n, vmin, vmean, vmax), *_ = read_aggregates(st.conn, 100 * MIN, 100 * MIN)
    assert (n, vmin, vmax) == (61, 1.0, 1000.0)
    assert vmean == pytest.approx((30.5 * 60 + 1000) / 61)
    assert sqlite3.connect(tmp_path / "r.db").execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    st.close()


def _hello(**kw: object) -> agent_pb2.Hello:
    h = agent_pb2.Hello(node="n1", boot_id="b1", host_ip="198.18.0.11")
    for k, v in kw.items():
        setattr(h, k, v)
    return h


@pytest.mark.parametrize(("field", "value", "code"), [
    ("node", "", "INVALID_ARGUMENT"),
    ("node", "x" * 300, "INVALID_ARGUMENT"),
    ("node", "bad name", "INVALID_ARGUMENT"),
    ("boot_id", "", "INVALID_ARGUMENT"),
    ("boot_id", "b" * 5000, "INVALID_ARGUMENT"),
    ("host_ip", "169.254.169.254", "PERMISSION_DENIED"),
    ("pod_ip", "0xa9fea9fe", "PERMISSION_DENIED"),
    ("host_ip", "not-an-ip", "INVALID_ARGUMENT"),
    ("time_unix_nano", -5, "INVALID_ARGUMENT"),
])
def test_hostile_hellos_are_refused(field: str, value: object, code: str) -> None:
    with pytest.raises(Refused) as ei:
        check_hello(_hello(**{field: value}))
    assert ei.value.code == code


def test_unknown_enum_value_in_capabilities_is_refused() -> None:
    h = _hello()
    h.capabilities.items.add(name="bbr", state=77)
    with pytest.raises(Refused, match="unknown readiness"):
        check_hello(h)


def _b(**kw: object) -> agent_pb2.Batch:
    return agent_pb2.Batch(boot_id="b1", seq=1, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [
    _b(samples=[common_pb2.Sample(name="x", value=math.nan)]),
    _b(samples=[common_pb2.Sample(name="x", value=math.inf)]),
    _b(samples=[common_pb2.Sample(name="a", value=1e300), common_pb2.Sample(name="b", value=-math.inf),
                common_pb2.Sample(name="c", value=1e300)]),
    _b(samples=[common_pb2.Sample(name="", value=1)]),
    _b(samples=[common_pb2.Sample(name="x" * 201, value=1)]),
    _b(samples=[common_pb2.Sample(name="x", value=1, labels={"k": "v" * 1000})]),
    _b(probe_results=[common_pb2.ProbeResult(probe_id="p", figures={"p99_us": -3.0})]),
    _b(probe_results=[common_pb2.ProbeResult(probe_id="p", figures={"p99_us": math.nan})]),
    _b(probe_results=[common_pb2.ProbeResult(probe_id="")]),
    _b(events=[common_pb2.LogEvent(level="shout", message="x")]),
    _b(time_unix_nano=-1),
    agent_pb2.Batch(boot_id="b1", seq=0),
    agent_pb2.Batch(boot_id="someone-else", seq=1),
])
def test_hostile_batches_are_refused(batch: agent_pb2.Batch) -> None:
    with pytest.raises(Refused):
        check_batch(batch, "b1")


@pytest.mark.parametrize(("labels", "says"), [
    ({f"k{i}": "v" for i in range(33)}, "33 labels (cap 32)"),
    ({"": "v"}, "label '' empty or longer than 256"),
    ({"k" * 257: "v"}, "empty or longer than 256"),
    ({"a": "v", "b": "v" * 257}, "label 'b' empty or longer than 256"),
])
def test_bad_sample_labels_are_refused_naming_the_sample(labels: dict[str, str], says: str) -> None:
    b = _b(samples=[common_pb2.Sample(name="ok", value=1, labels={"a": "b"}),
                    common_pb2.Sample(name="cni_rss_bytes", value=1, labels=labels)])
    with pytest.raises(Refused, match="sample cni_rss_bytes: ") as exc:
        check_batch(b, "b1")
    assert says in str(exc.value)
    check_batch(_b(samples=[common_pb2.Sample(name="x", value=1, labels={f"k{i}": "v" * 256 for i in range(32)})]),
                "b1")  # at the caps: accepted


def test_huge_finite_values_are_accepted() -> None:
    # their sum overflows to inf, yet every value is finite
    check_batch(_b(samples=[common_pb2.Sample(name="x", value=1.7e308), common_pb2.Sample(name="y", value=1.7e308)]),
                "b1")


def test_a_replayed_earlier_boot_is_accepted_only_when_announced() -> None:
    b = agent_pb2.Batch(boot_id="old", seq=3)
    check_batch(b, "b1", {"old"})
    with pytest.raises(Refused):
        check_batch(b, "b1", {"other"})


def test_default_keepalive_notices_a_dead_link_within_60s_and_server_permits_it() -> None:
    client = dict(grpcutil.client_options())
    server = dict(grpcutil.server_options())
    worst = (int(client["grpc.keepalive_time_ms"]) + int(client["grpc.keepalive_timeout_ms"])) / 1000
    assert worst <= 60
    # the server tolerates pings at the client's interval, and never GOAWAYs for too many pings
    assert int(server["grpc.http2.min_recv_ping_interval_without_data_ms"]) <= int(client["grpc.keepalive_time_ms"])
    assert server["grpc.http2.max_ping_strikes"] == 0
