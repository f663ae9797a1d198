"""Drop counters of the sending namespace: UDP ``SndbufErrors`` (/proc/net/snmp) and per-interface
tx drops (/proc/net/dev). /proc/net shows the reader's namespace, so inside another namespace the
files are read by a thread that entered it."""

from __future__ import annotations

from pathlib import Path

from cniscope.agent import nsthread


def parse_snmp_udp(text: str) -> dict[str, int]:
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False) if v.lstrip("-").isdigit()}


def parse_dev_tx_drops(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for ln in text.splitlines()[2:]:
        if ":" not in ln:
            continue
        name, rest = ln.split(":", 1)
        cols = rest.split()
        if len(cols) >= 12 and name.strip() != "lo":
            out[name.strip()] = int(cols[11])  # tx: bytes packets errs drop ...
    return out


def _read() -> dict[str, int]:
    snmp = Path("/proc/thread-self/net/snmp").read_text()
    dev = Path("/proc/thread-self/net/dev").read_text()
    counters = {"udp_sndbuf_errors": parse_snmp_udp(snmp).get("SndbufErrors", 0)}
    counters.update({f"tx_dropped:{k}": v for k, v in parse_dev_tx_drops(dev).items()})
    return counters


async def sender_drop_counters(netns: str) -> dict[str, int]:
    """Counters of ``netns`` ("" = the agent's own namespace); empty when unreadable."""
    try:
        return await nsthread.run_in(netns, _read)
    except Exception:
        return {}
