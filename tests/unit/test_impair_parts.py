"""The delay line's netlink codec on datagrams recorded from this kernel (and broken twins), and the
impairment plan pieces: units, bounds, the nft/iptables/tc text that ``lab impair`` installs."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from cniscope.core.errors import ValidationError
from cniscope.lab import delayline as dl
from cniscope.lab import impair_plan as impair
from cniscope.lab import nfqueue_wire as nfq

FIX = Path(__file__).parent.parent / "fixtures" / "nfqueue"


def fixture(name: str) -> bytes:
    return (FIX / name).read_bytes()


# ---- recorded kernel messages --------------------------------------------------------------------
def test_recorded_egress_packet_parses_to_its_id_without_a_stamp() -> None:
    (ev,) = nfq.parse(fixture("packet_icmp_egress.bin"))
    assert (ev.kind, ev.queue, ev.packet_id, ev.stamp_ns) == ("packet", 4210, 1, 0)


def test_recorded_ingress_packet_carries_the_kernel_receive_stamp() -> None:
    (ev,) = nfq.parse(fixture("packet_icmp_ingress_stamped.bin"))
    assert ev.kind == "packet"
    assert ev.packet_id == 1
    assert ev.stamp_ns == 1_795_740_210_314_157_000   # Nov 2026, µs resolution


def test_recorded_ack_and_busy_error() -> None:
    assert nfq.parse(fixture("bind_ack.bin")) == [nfq.Event("ack", seq=1)]
    (err,) = nfq.parse(fixture("bind_busy_error.bin"))
    assert (err.kind, err.error, err.seq) == ("error", 16, 2)   # EBUSY: queue already bound


@pytest.mark.parametrize("cut", [3, 17, 30, 39])
def test_truncated_packet_is_an_error_not_an_empty_result(cut: int) -> None:
    data = fixture("packet_icmp_egress.bin")[:cut]
    with pytest.raises(ValueError, match="runs past|trailing"):
        nfq.parse(data)


def test_packet_without_its_header_attribute_is_refused() -> None:
    data = bytearray(fixture("packet_icmp_egress.bin"))
    # retag every attribute as type 30 (unknown): no NFQA_PACKET_HDR left
    off = 20
    while off + 4 <= len(data):
        length = struct.unpack_from("=H", data, off)[0]
        struct.pack_into("=H", data, off + 2, 30)
        off += (length + 3) & ~3
    with pytest.raises(ValueError, match="without NFQA_PACKET_HDR"):
        nfq.parse(bytes(data))


def test_attribute_longer_than_its_message_is_refused() -> None:
    data = bytearray(fixture("packet_icmp_egress.bin"))
    struct.pack_into("=H", data, 20, 400)
    with pytest.raises(ValueError, match="runs past"):
        nfq.parse(bytes(data))


# ---- messages we send ----------------------------------------------------------------------------
def test_verdict_layout() -> None:
    msg = nfq.verdict(4210, 77, seq=9)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq, pid) == (len(msg), (3 << 8) | 1, nfq.NLM_F_REQUEST, 9, 0)
    assert struct.unpack_from("!BBH", msg, 16) == (socket.AF_UNSPEC, 0, 4210)
    alen, atype = struct.unpack_from("=HH", msg, 20)
    assert (alen, atype) == (12, nfq.NFQA_VERDICT_HDR)
    assert struct.unpack_from("!II", msg, 24) == (nfq.NF_ACCEPT, 77)
    batch = nfq.verdict(4210, 77, seq=10, batch=True)
    assert struct.unpack_from("=H", batch, 4)[0] == (3 << 8) | nfq.NFQNL_MSG_VERDICT_BATCH


def test_config_params_asks_for_metadata_only_and_fail_open() -> None:
    msg = nfq.config_params(5, seq=1, maxlen=100)
    attrs = dict(nfq.iter_attrs(msg, 20, len(msg)))
    assert attrs[nfq.NFQA_CFG_PARAMS] == struct.pack("!IB", 0, nfq.NFQNL_COPY_META)
    assert struct.unpack("!I", attrs[nfq.NFQA_CFG_QUEUE_MAXLEN]) == (100,)
    flags = struct.unpack("!I", attrs[nfq.NFQA_CFG_FLAGS])[0]
    assert flags & nfq.NFQA_CFG_F_FAIL_OPEN
    assert struct.unpack_from("=H", msg, 6)[0] & nfq.NLM_F_ACK


def test_bound_queues_from_recorded_proc_text() -> None:
    text = (FIX / "proc_nfnetlink_queue.txt").read_text()
    assert nfq.parse_bound_queues(text) == {4210: 9440}
    assert nfq.parse_bound_queues("") == {}
    assert nfq.parse_bound_queues("garbage line\n") == {}


def test_arrival_uses_a_plausible_kernel_stamp_only() -> None:
    now_mono, now_wall = 5_000_000_000, 1_700_000_000_000_000_000
    assert dl.arrival_ns(now_mono, now_wall, 0) == now_mono
    assert dl.arrival_ns(now_mono, now_wall, now_wall - 80_000) == now_mono - 80_000
    assert dl.arrival_ns(now_mono, now_wall, now_wall + 5_000) == now_mono            # from the future
    assert dl.arrival_ns(now_mono, now_wall, now_wall - 10**9) == now_mono            # stepped clock


def test_stats_summary_percentiles() -> None:
    s = dl.Stats(packets=100, released=100, late_us=[float(x) for x in range(100)])
    summ = s.summary()
    assert summ["late_p50_us"] == 50.0
    assert summ["late_p99_us"] == 99.0
    assert summ["late_max_us"] == 99.0
    assert dl.Stats().summary()["late_p50_us"] == 0.0


def test_delay_line_refuses_out_of_range_settings() -> None:
    with pytest.raises(ValueError, match="queue"):
        dl.DelayLine(70_000, 1000)
    with pytest.raises(ValueError, match="delay"):
        dl.DelayLine(1, -1)


# ---- impairment options --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "us"), [("2ms", 2000.0), ("500us", 500.0), ("0.5ms", 500.0),
                                           ("2", 2000.0), ("1s", 1e6), (" 10 MS ", 10_000.0)])
def test_delay_units(text: str, us: float) -> None:
    assert impair.parse_delay(text) == us


@pytest.mark.parametrize(("text", "bps"), [("100mbit", 100_000_000), ("1gbit", 10**9), ("500kbit", 500_000),
                                            ("100M", 100_000_000), ("64000", 64_000)])
def test_rate_units(text: str, bps: int) -> None:
    assert impair.parse_rate(text) == bps


@pytest.mark.parametrize(("fn", "text"), [
    (impair.parse_delay, "2 parsecs"), (impair.parse_delay, "-1ms"), (impair.parse_delay, "2s"),
    (impair.parse_rate, "100mbps"), (impair.parse_rate, "1bit"), (impair.parse_rate, "1000gbit"),
    (impair.parse_loss, "101%"), (impair.parse_loss, "lots"), (impair.parse_loss, "-2%"),
])
def test_bad_values_are_refused_with_the_option_name(fn: object, text: str) -> None:
    name = fn.__name__.removeprefix("parse_")  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match=name):
        fn(text)  # type: ignore[operator]


def test_impairment_from_cli_strings() -> None:
    imp = impair.Impairment.parse({"delay": "2ms", "loss": "2%", "rate": "100mbit", "direction": "both"})
    assert (imp.delay_us, imp.loss_pct, imp.rate_bps) == (2000.0, 2.0, 100_000_000)
    assert imp.directions() == ["egress", "ingress"]
    assert impair.Impairment.parse({}).empty
    with pytest.raises(ValidationError, match="direction"):
        impair.Impairment.parse({"direction": "sideways"})
    with pytest.raises(ValidationError, match="max_seconds"):
        impair.Impairment.parse({"delay": "1ms", "max_seconds": "0"})


def test_loss_rule_is_on_the_wire_side_of_the_node_port() -> None:
    out = impair.loss_ruleset(3, "egress", 2.0)
    assert "table bridge cniscope_impair_n3_egress" in out
    assert 'hook prerouting' in out
    assert 'iifname "n3"' in out
    assert "numgen random mod 1000000 < 20000" in out
    inn = impair.loss_ruleset(3, "ingress", 0.5)
    assert 'hook postrouting' in inn
    assert 'oifname "n3"' in inn
    assert "< 5000 " in inn


def test_queue_rules_are_fail_open_and_in_their_own_chain() -> None:
    rules = impair.queue_rules("egress")
    assert rules[0] == ["-N", "CNISCOPE-IMPAIR-OUT"]
    assert rules[1][-1] == "--queue-bypass"
    assert "4210" in rules[1]
    assert rules[-1] == ["-A", "POSTROUTING", "-o", "eth0", "-j", "CNISCOPE-IMPAIR-OUT"]


def test_tbf_bucket_holds_ten_frames_or_two_milliseconds() -> None:
    assert impair.tbf_args(100_000_000)[:5] == ["tbf", "rate", "100000000bit", "burst", "25000"]
    assert impair.tbf_args(1_000_000)[4] == "15140"


def test_delayline_argv_is_bounded() -> None:
    imp = impair.Impairment(delay_us=2000, max_seconds=30)
    argv = impair.delayline_argv("egress", imp, "/tmp/x.json")
    assert argv[1:3] == ["-m", "cniscope.lab.delayline"]
    assert argv[argv.index("--max-seconds") + 1] == "30"
    assert argv[argv.index("--delay-us") + 1] == "2000"
