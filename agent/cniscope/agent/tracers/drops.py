"""Packet drops from ``skb:kfree_skb``, by the kernel's drop reason. Reason names come from the
tracepoint's own format file (its ``__print_symbolic`` table), so they match the running kernel."""

from __future__ import annotations

import re
from pathlib import Path

from cniscope.agent.tracers.bcc_tracer import TRACEFS, BccTracer
from cniscope.api.v1 import common_pb2
from cniscope.core.errors import ParseError

_SYM = re.compile(r'\{\s*(\d+)\s*,\s*"([A-Z0-9_]+)"\s*\}')


def parse_reasons(format_text: str) -> dict[int, str]:
    """Drop-reason numbers → names from ``events/skb/kfree_skb/format``."""
    fmt = next((line for line in format_text.splitlines() if line.startswith("print fmt:")), None)
    if fmt is None or "REC->reason" not in fmt:
        raise ParseError("kfree_skb format: no print fmt with a reason table")
    table = fmt.split("REC->reason", 1)[1]
    if not table.rstrip().endswith(")"):
        raise ParseError("kfree_skb format: reason table is truncated")
    out = {int(n): name for n, name in _SYM.findall(table)}
    if not out:
        raise ParseError("kfree_skb format: empty reason table")
    return out


class Drops(BccTracer):
    name = "drops"
    events = ["skb/kfree_skb"]

    def __init__(self, netns: str | None = None, tracefs: Path = TRACEFS) -> None:
        super().__init__(netns)
        self._names: dict[int, str] = {}
        self._tracefs = tracefs

    def start(self) -> None:
        super().start()
        try:
            self._names = parse_reasons((self._tracefs / "events/skb/kfree_skb/format").read_text())
        except (OSError, ParseError):
            self._names = {}

    def by_reason(self) -> dict[str, int]:
        t = self.table("by_reason")
        out: dict[str, int] = {}
        for k, v in t.items():
            name = self._names.get(int(k.value), str(int(k.value)))
            out[name] = out.get(name, 0) + int(v.value)
        return out

    def figures(self) -> dict[str, float]:
        return {f"drops_{k.lower()}": float(v) for k, v in self.by_reason().items()}

    def samples(self, now_ns: int) -> list[common_pb2.Sample]:
        return [common_pb2.Sample(name="skb_drops_total", value=float(n), time_unix_nano=now_ns,
                                  labels={"reason": r}) for r, n in self.by_reason().items()]
