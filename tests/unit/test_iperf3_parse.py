"""iperf3 -J parsing on recorded real iperf3 3.12 output (tests/fixtures/iperf3, captured in the lab
between two node namespaces), with malformed twins and property-based garbage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cniscope.agent.probes.iperf3_parse import load_report, parse_tcp, parse_udp
from cniscope.core.errors import ParseError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "iperf3"


def text(name: str) -> str:
    return (FIX / name).read_text()


def test_tcp_ok_matches_iperf3_sums() -> None:
    r = parse_tcp(text("tcp_ok.json"))
    f = r.figures()
    assert f["sent_gbps"] == pytest.approx(10.524876, abs=1e-5)
    assert f["received_gbps"] == pytest.approx(10.524594, abs=1e-5)
    assert f["retransmits"] == 2407
    assert f["sender_mean_rtt_us"] == 95.0
    assert f["streams"] == 1
    assert not r.reverse


def test_tcp_streams_weighted_rtt() -> None:
    f = parse_tcp(text("tcp_streams_ok.json")).figures()
    assert f["streams"] == 2
    assert f["received_gbps"] == pytest.approx(12.828086, abs=1e-5)
    # byte-weighted mean of 232 and 219 µs, the two streams sent almost equal bytes
    assert 219 < f["sender_mean_rtt_us"] < 232


def test_tcp_reverse_has_no_local_sender_rtt() -> None:
    r = parse_tcp(text("tcp_reverse_ok.json"))
    assert r.reverse
    assert "sender_mean_rtt_us" not in r.figures()
    assert r.figures()["received_gbps"] == pytest.approx(7.407678, abs=1e-5)


def test_udp_ok_valid() -> None:
    r = parse_udp(text("udp_ok.json"))
    f = r.figures()
    assert f["requested_gbps"] == 0.05
    assert f["achieved_gbps"] == pytest.approx(0.049974, abs=1e-6)
    assert f["loss_pct"] == 0
    assert f["sender_packets"] == 8925
    assert f["receiver_packets"] == 8925
    assert f["valid"] == 1.0
    assert f["jitter_ms"] == pytest.approx(0.0103, abs=1e-4)


def test_udp_loss_counts_come_from_the_receiver() -> None:
    f = parse_udp(text("udp_loss_ok.json")).figures()
    assert f["lost_packets"] == 164
    assert f["receiver_packets"] == 8926 - 164
    assert f["loss_pct"] == pytest.approx(1.8373, abs=1e-3)
    assert f["valid"] == 1.0  # 49.06 of 50 Mbit/s arrived: above 95 %


def test_udp_overdriven_is_invalid_with_reason() -> None:
    r = parse_udp(text("udp_overdriven.json"))
    valid, why = r.validity()
    assert not valid
    assert "below 95% of the requested 20000.0 Mbit/s" in why
    assert r.figures()["valid"] == 0.0


def test_udp_sender_drops_invalidate() -> None:
    r = parse_udp(text("udp_ok.json"))
    valid, why = r.validity(sender_drops=3)
    assert not valid
    assert "dropped 3" in why
    assert r.figures(sender_drops=3)["valid"] == 0.0


@pytest.mark.parametrize(("name", "needle"), [
    ("refused_error.json", "Connection refused"),
    ("busy_error.json", "server is busy"),
    ("tcp_server_killed_error.json", "server has terminated"),
    ("truncated.json", "truncated"),
    ("empty.json", "no output"),
    ("nan_values.json", "non-finite"),
    ("udp_nan_jitter.json", "non-finite"),
])
def test_malformed_twins_raise(name: str, needle: str) -> None:
    parse = parse_udp if name.startswith("udp") else parse_tcp
    with pytest.raises(ParseError, match=needle):
        parse(text(name))


def test_trailing_text_is_kept_not_fatal() -> None:
    r = parse_tcp(text("trailing_text.json"))
    assert r.trailing.startswith("iperf3: interrupt")
    assert r.figures() == parse_tcp(text("tcp_ok.json")).figures()


def test_protocol_mismatch() -> None:
    with pytest.raises(ParseError, match="expected a TCP report"):
        parse_tcp(text("udp_ok.json"))
    with pytest.raises(ParseError, match="expected a UDP report"):
        parse_udp(text("tcp_ok.json"))


def test_missing_sum_and_negative_values() -> None:
    obj = json.loads(text("tcp_ok.json"))
    del obj["end"]["sum_received"]
    with pytest.raises(ParseError, match="sum_received"):
        parse_tcp(json.dumps(obj))
    obj = json.loads(text("udp_ok.json"))
    obj["end"]["sum_received"]["lost_packets"] = -1
    with pytest.raises(ParseError, match="lost_packets"):
        parse_udp(json.dumps(obj))
    obj["end"]["sum_received"]["lost_packets"] = 10**6
    with pytest.raises(ParseError, match="lost of"):
        parse_udp(json.dumps(obj))


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
_json = st.recursive(_json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_garbage_text_is_a_parse_error(garbage: str) -> None:
    for parse in (parse_tcp, parse_udp):
        with pytest.raises(ParseError):
            parse(garbage)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json_is_a_parse_error(doc: object) -> None:
    for parse in (parse_tcp, parse_udp):
        with pytest.raises(ParseError):
            parse(json.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_every_truncation_of_a_real_report_fails(share: float) -> None:
    src = text("tcp_ok.json").rstrip()
    cut = int(len(src) * share)
    with pytest.raises(ParseError):
        parse_tcp(src[:cut])


def test_load_report_object_only() -> None:
    with pytest.raises(ParseError, match="not JSON"):
        load_report("iperf3: error - unable to connect")
