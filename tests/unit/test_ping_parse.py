"""ping output parsing on recorded real iputils output, with malformed twins."""

from __future__ import annotations

from pathlib import Path

import pytest

from cniscope.agent.probes.ping_parse import parse_ping
from cniscope.core.errors import ParseError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "ping"


def test_ok_matches_pings_own_summary() -> None:
    res = parse_ping((FIX / "ok_5.txt").read_text())
    f = res.figures()
    assert (res.transmitted, res.received) == (5, 5)
    assert f["loss_pct"] == 0.0
    # ping printed min/avg/max/mdev = 0.043/0.091/0.274/0.091 ms
    assert f["min_us"] == 43.0
    assert f["max_us"] == 274.0
    assert f["mean_us"] == pytest.approx(91.2, abs=0.1)
    assert f["mdev_us"] == pytest.approx(91.0, abs=1.0)
    assert f["p50_us"] == 46.0


def test_all_lost_has_no_latency_figures() -> None:
    res = parse_ping((FIX / "unreachable.txt").read_text())
    f = res.figures()
    assert f["loss_pct"] == 100.0
    assert "p50_us" not in f, "a fully lost run must not report a zero latency"


@pytest.mark.parametrize("name", ["truncated.txt", "empty.txt"])
def test_malformed_is_an_error(name: str) -> None:
    with pytest.raises(ParseError):
        parse_ping((FIX / name).read_text())


def test_more_received_than_sent_is_an_error() -> None:
    with pytest.raises(ParseError):
        parse_ping("3 packets transmitted, 4 received, 0% packet loss\n")


def test_duplicates_count_once() -> None:
    text = (FIX / "ok_5.txt").read_text().replace(
        "64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.049 ms",
        "64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.049 ms\n"
        "64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=9.000 ms (DUP!)")
    assert len(parse_ping(text).rtts_us) == 5
