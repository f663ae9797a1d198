"""Parse iperf3 ``-J`` client output (3.12). Pure functions, tested on recorded real output.

Anything that is not a complete, finite report raises :class:`ParseError` — a report with an
``"error"`` member, truncated JSON, empty output, ``nan`` values, missing sums. A zeroed result is
never invented. Text after the JSON object (iperf3 prints warnings there) is kept as ``trailing``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cniscope.core.errors import ParseError

UDP_VALID_FRACTION = 0.95  # achieved below this share of the requested rate → not a valid test


@dataclass(frozen=True)
class TcpReport:
    sent_bps: float
    received_bps: float
    retransmits: int
    mean_rtt_us: float | None       # only when the local end was the sender (not reverse)
    streams: int
    seconds: float
    reverse: bool
    bytes_received: int
    trailing: str = ""

    def figures(self) -> dict[str, float]:
        f = {
            "sent_gbps": round(self.sent_bps / 1e9, 6),
            "received_gbps": round(self.received_bps / 1e9, 6),
            "retransmits": float(self.retransmits),
            "streams": float(self.streams),
            "duration_s": round(self.seconds, 6),
            "bytes_received": float(self.bytes_received),
        }
        if self.mean_rtt_us is not None:
            f["sender_mean_rtt_us"] = round(self.mean_rtt_us, 1)
        return f


@dataclass(frozen=True)
class UdpReport:
    requested_bps: float
    sent_bps: float
    achieved_bps: float            # what the receiver got
    loss_pct: float
    jitter_ms: float
    sender_packets: int
    receiver_packets: int          # datagrams that arrived (receiver's count minus its losses)
    lost_packets: int
    out_of_order: int
    seconds: float
    trailing: str = ""

    def validity(self, sender_drops: int = 0) -> tuple[bool, str]:
        """A UDP result is trusted only when the sender really offered what was asked."""
        reasons = []
        if self.requested_bps > 0 and self.sent_bps < UDP_VALID_FRACTION * self.requested_bps:
            reasons.append(f"sender offered {self.sent_bps / 1e6:.1f} Mbit/s, below 95% of the "
                           f"requested {self.requested_bps / 1e6:.1f} Mbit/s")
        if self.requested_bps > 0 and self.achieved_bps < UDP_VALID_FRACTION * self.requested_bps:
            reasons.append(f"achieved {self.achieved_bps / 1e6:.1f} Mbit/s, below 95% of the "
                           f"requested {self.requested_bps / 1e6:.1f} Mbit/s")
        if sender_drops > 0:
            reasons.append(f"the sending host itself dropped {sender_drops} datagrams "
                           "(UDP SndbufErrors / tx drops)")
        return (not reasons, "; ".join(reasons))

    def figures(self, sender_drops: int = 0) -> dict[str, float]:
        valid, _ = self.validity(sender_drops)
        return {
            "requested_gbps": round(self.requested_bps / 1e9, 6),
            "sent_gbps": round(self.sent_bps / 1e9, 6),
            "achieved_gbps": round(self.achieved_bps / 1e9, 6),
            "loss_pct": round(self.loss_pct, 4),
            "jitter_ms": round(self.jitter_ms, 4),
            "sender_packets": float(self.sender_packets),
            "receiver_packets": float(self.receiver_packets),
            "lost_packets": float(self.lost_packets),
            "out_of_order": float(self.out_of_order),
            "sender_drops": float(sender_drops),
            "duration_s": round(self.seconds, 6),
            "valid": 1.0 if valid else 0.0,
        }


def load_report(text: str) -> tuple[dict[str, Any], str]:
    """The JSON object and any trailing text; ParseError for anything that is not one."""
    s = text.lstrip()
    if not s:
        raise ParseError("iperf3 produced no output")
    if not s.startswith("{"):
        raise ParseError(f"iperf3 output is not JSON: {s.splitlines()[0][:120]!r}")
    try:
        obj, end = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(s)
    except json.JSONDecodeError as exc:
        if s[exc.pos:exc.pos + 4].lstrip("-").lower().startswith(("nan", "inf")):
            raise ParseError(f"iperf3 JSON holds a non-finite value at line {exc.lineno}") from None
        raise ParseError(f"iperf3 JSON is malformed or truncated ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, dict):
        raise ParseError("iperf3 JSON is not an object")
    err = obj.get("error")
    if err:
        raise ParseError(f"iperf3: {err}")
    return obj, s[end:].strip()


def _reject_constant(name: str) -> float:
    raise ParseError(f"iperf3 JSON holds a non-finite value ({name})")


def _obj(d: Any, *path: str) -> dict[str, Any]:
    cur = d
    for key in path:
        if not isinstance(cur, dict) or not isinstance(cur.get(key), dict):
            raise ParseError(f"iperf3 report lacks {'.'.join(path)}")
        cur = cur[key]
    return cur  # type: ignore[no-any-return]


def _num(d: dict[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ParseError(f"iperf3 report: {where}.{key} is {v!r}, not a number")
    x = float(v)
    if not math.isfinite(x) or x < 0:
        raise ParseError(f"iperf3 report: {where}.{key} is {v!r}")
    return x


def _test_start(obj: dict[str, Any]) -> dict[str, Any]:
    return _obj(obj, "start", "test_start")


def parse_tcp(text: str) -> TcpReport:
    obj, trailing = load_report(text)
    ts = _test_start(obj)
    if ts.get("protocol") != "TCP":
        raise ParseError(f"expected a TCP report, got protocol {ts.get('protocol')!r}")
    sent = _obj(obj, "end", "sum_sent")
    recv = _obj(obj, "end", "sum_received")
    sent_bps = _num(sent, "bits_per_second", "end.sum_sent")
    recv_bps = _num(recv, "bits_per_second", "end.sum_received")
    seconds = _num(recv, "seconds", "end.sum_received")
    if seconds <= 0:
        raise ParseError("iperf3 report: the test ran for 0 seconds")
    retrans = _num(sent, "retransmits", "end.sum_sent") if "retransmits" in sent else 0.0
    reverse = bool(ts.get("reverse"))
    streams = obj["end"].get("streams")
    if not isinstance(streams, list) or not streams:
        raise ParseError("iperf3 report lacks end.streams")
    rtts: list[tuple[float, float]] = []
    for i, st in enumerate(streams):
        snd = _obj(st, "sender") if isinstance(st, dict) else _obj({}, "sender")
        if "mean_rtt" in snd:
            rtt = _num(snd, "mean_rtt", f"end.streams[{i}].sender")
            if rtt > 0:
                rtts.append((rtt, _num(snd, "bytes", f"end.streams[{i}].sender")))
    mean_rtt: float | None = None
    if rtts and not reverse:
        weight = sum(b for _, b in rtts)
        mean_rtt = (sum(r * b for r, b in rtts) / weight) if weight > 0 else sum(r for r, _ in rtts) / len(rtts)
    return TcpReport(
        sent_bps=sent_bps, received_bps=recv_bps, retransmits=int(retrans), mean_rtt_us=mean_rtt,
        streams=len(streams), seconds=seconds, reverse=reverse,
        bytes_received=int(_num(recv, "bytes", "end.sum_received")), trailing=trailing,
    )


def parse_udp(text: str) -> UdpReport:
    obj, trailing = load_report(text)
    ts = _test_start(obj)
    if ts.get("protocol") != "UDP":
        raise ParseError(f"expected a UDP report, got protocol {ts.get('protocol')!r}")
    requested = _num(ts, "target_bitrate", "start.test_start") * max(1, int(_num(ts, "num_streams", "start.test_start")))
    sent = _obj(obj, "end", "sum_sent")
    recv = _obj(obj, "end", "sum_received")
    where_r = "end.sum_received"
    packets = int(_num(recv, "packets", where_r))
    lost = int(_num(recv, "lost_packets", where_r))
    if lost > packets:
        raise ParseError(f"iperf3 report: {lost} lost of {packets} packets")
    seconds = _num(recv, "seconds", where_r)
    if seconds <= 0:
        raise ParseError("iperf3 report: the test ran for 0 seconds")
    ooo = 0
    for st in obj["end"].get("streams") or []:
        if isinstance(st, dict) and isinstance(st.get("udp"), dict) and "out_of_order" in st["udp"]:
            ooo += int(_num(st["udp"], "out_of_order", "end.streams[].udp"))
    return UdpReport(
        requested_bps=requested,
        sent_bps=_num(sent, "bits_per_second", "end.sum_sent"),
        achieved_bps=_num(recv, "bits_per_second", where_r),
        loss_pct=_num(recv, "lost_percent", where_r),
        jitter_ms=_num(recv, "jitter_ms", where_r),
        sender_packets=int(_num(sent, "packets", "end.sum_sent")),
        receiver_packets=packets - lost,
        lost_packets=lost,
        out_of_order=ooo,
        seconds=seconds,
        trailing=trailing,
    )
