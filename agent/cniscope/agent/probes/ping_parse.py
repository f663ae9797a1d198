"""Parse iputils ``ping -n`` output. Pure functions, tested on recorded real output."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cniscope.core import stats
from cniscope.core.errors import ParseError

_REPLY = re.compile(r"^\d+ bytes from [^:]+: icmp_seq=(\d+) .*time[=<]([\d.]+) ms", re.M)
_SUMMARY = re.compile(r"^(\d+) packets transmitted, (\d+) (?:packets )?received", re.M)


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    rtts_us: tuple[float, ...]

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.transmitted - self.received) / self.transmitted if self.transmitted else 100.0

    def figures(self) -> dict[str, float]:
        f = {
            "transmitted": float(self.transmitted),
            "received": float(self.received),
            "loss_pct": round(self.loss_pct, 3),
        }
        if self.rtts_us:
            r = self.rtts_us
            f.update({
                "min_us": min(r),
                "p50_us": round(stats.percentile(r, 50), 1),
                "p99_us": round(stats.percentile(r, 99), 1),
                "max_us": max(r),
                "mean_us": round(stats.mean(r), 1),
                "mdev_us": round(stats.mdev(r), 1),
            })
        return f


def parse_ping(text: str) -> PingResult:
    """Parse ping's stdout; raises ParseError when there is no summary line."""
    m = _SUMMARY.search(text)
    if m is None:
        snippet = text.strip().splitlines()[-1][:120] if text.strip() else "empty output"
        raise ParseError(f"ping output has no statistics line ({snippet!r})")
    transmitted, received = int(m.group(1)), int(m.group(2))
    if received > transmitted:
        raise ParseError(f"ping reports {received} received of {transmitted} transmitted")
    seen: dict[int, float] = {}
    for rm in _REPLY.finditer(text):
        seq = int(rm.group(1))
        if seq not in seen:  # duplicates (DUP!) count once
            seen[seq] = float(rm.group(2)) * 1000.0
    rtts = tuple(round(v, 1) for _, v in sorted(seen.items()))
    if len(rtts) > received:
        rtts = rtts[:received]
    return PingResult(transmitted, received, rtts)
