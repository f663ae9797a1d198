"""What a lab impairment is, and the commands it takes, as data: the options (declared once, for
the CLI and for validation), their parsing with caps, the tc / iptables / nft / delay-line argv, and
how an applied impairment reads. Nothing here touches a kernel; :mod:`cniscope.lab.impair` does."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from cniscope.core.errors import ValidationError
from cniscope.core.params import Param, ParamSet

Direction = Literal["egress", "ingress", "both"]
DIRECTIONS: tuple[str, ...] = ("egress", "ingress", "both")

CHAIN = {"egress": "CNISCOPE-IMPAIR-OUT"}
HOOK = {"egress": ("POSTROUTING", "-o")}
LOSS_SCALE = 1_000_000            # loss resolution: 1 ppm
QUEUE = {"egress": 4210}          # NFQUEUE numbers are per network namespace
ROOT_HANDLE = "c5:"               # our root qdisc; anything else on the device is left alone
CHILD_HANDLE = "c6:"
DEFAULT_LIFETIME_S = 3600.0

# The options, declared once: the CLI renders them, ``Impairment.parse`` validates with them.
PARAMS = ParamSet((
    Param("delay", "str", "", "added one-way delay, e.g. 2ms, 500us (netem, else an NFQUEUE delay line)"),
    Param("loss", "str", "", "random loss on the wire, e.g. 2%% (nftables bridge numgen drop)"),
    Param("rate", "str", "", "rate limit, e.g. 100mbit (tbf)"),
    Param("direction", "choice", "egress", "which way the impairment acts on the node's eth0",
          choices=DIRECTIONS),
    Param("max_seconds", "float", DEFAULT_LIFETIME_S, "delay line lifetime", min=1, max=86_400, unit="s"),
))
MAX_DELAY_US = 1_000_000.0
MIN_RATE_BPS, MAX_RATE_BPS = 8_000, 100_000_000_000

_DELAY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s)?\s*$", re.IGNORECASE)
_RATE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(bit|kbit|mbit|gbit|k|m|g)?\s*$", re.IGNORECASE)
_LOSS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%?\s*$")
_RATE_UNIT = {"bit": 1, "": 1, "k": 1e3, "kbit": 1e3, "m": 1e6, "mbit": 1e6, "g": 1e9, "gbit": 1e9}
_DELAY_UNIT = {"us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}


def parse_delay(text: str) -> float:
    """'2ms' → 2000.0 µs; a bare number is milliseconds (as in tc)."""
    m = _DELAY_RE.match(text)
    if not m:
        raise ValidationError(f"delay: expected a duration like 2ms or 500us, got {text!r}")
    us = float(m.group(1)) * _DELAY_UNIT[(m.group(2) or "ms").lower()]
    if not 0 <= us <= MAX_DELAY_US:
        raise ValidationError(f"delay: {text} is above the cap of {MAX_DELAY_US / 1000:g} ms")
    return us


def parse_loss(text: str) -> float:
    """'2%' or '2' → 2.0 (percent)."""
    m = _LOSS_RE.match(text)
    if not m:
        raise ValidationError(f"loss: expected a percentage like 2%, got {text!r}")
    pct = float(m.group(1))
    if not 0 <= pct <= 100:
        raise ValidationError(f"loss: {text} is not between 0% and 100%")
    return pct


def parse_rate(text: str) -> int:
    """tc's units, in bits per second: '100mbit' → 100_000_000 (note: tc's 'bps' means bytes)."""
    m = _RATE_RE.match(text)
    if not m:
        raise ValidationError(f"rate: expected a rate like 100mbit or 1gbit, got {text!r}")
    bps = int(float(m.group(1)) * _RATE_UNIT[(m.group(2) or "").lower()])
    if not MIN_RATE_BPS <= bps <= MAX_RATE_BPS:
        raise ValidationError(f"rate: {text} is outside 8kbit..100gbit")
    return bps


@dataclass(frozen=True)
class Impairment:
    delay_us: float = 0.0
    loss_pct: float = 0.0
    rate_bps: int = 0
    direction: str = "egress"
    max_seconds: float = DEFAULT_LIFETIME_S

    @classmethod
    def parse(cls, raw: dict[str, str]) -> Impairment:
        v = PARAMS.validate({k: x for k, x in raw.items() if x not in ("", None)})
        return cls(
            delay_us=parse_delay(str(v["delay"])) if v["delay"] else 0.0,
            loss_pct=parse_loss(str(v["loss"])) if v["loss"] else 0.0,
            rate_bps=parse_rate(str(v["rate"])) if v["rate"] else 0,
            direction=str(v["direction"]),
            max_seconds=float(v["max_seconds"]),
        )

    @property
    def empty(self) -> bool:
        return not (self.delay_us or self.loss_pct or self.rate_bps)

    def directions(self) -> list[str]:
        return ["egress", "ingress"] if self.direction == "both" else [self.direction]


@dataclass
class Applied:
    """What ``apply`` did for one node, saved beside the lab state for ``show`` and ``clear``."""

    node: str
    impairment: dict[str, Any]
    delay_method: str = ""                       # "netem", "delayline" or ""
    netem_unavailable: str = ""                  # why netem was not used
    commands: list[str] = field(default_factory=list)         # every command run, in order
    processes: list[str] = field(default_factory=list)        # lab process roles


# ---- pure plan pieces (tested without root) ------------------------------------------------------
def tbf_args(rate_bps: int) -> list[str]:
    """tbf with a bucket of ~2 ms at the rate (at least 10 full frames) and 20 ms of queue."""
    burst = max(15_140, int(rate_bps / 8 * 0.002))
    return ["tbf", "rate", f"{rate_bps}bit", "burst", str(burst), "latency", "20ms"]


def netem_args(delay_us: float) -> list[str]:
    return ["netem", "delay", f"{delay_us:g}us"]


def queue_rules(direction: str) -> list[list[str]]:
    """iptables argv lists (without the 'iptables -w -t mangle' prefix) for the delay line."""
    chain = CHAIN[direction]
    hook, flag = HOOK[direction]
    return [["-N", chain],
            ["-A", chain, "-j", "NFQUEUE", "--queue-num", str(QUEUE[direction]), "--queue-bypass"],
            ["-A", hook, flag, "eth0", "-j", chain]]


def loss_table(node_index: int, direction: str) -> str:
    return f"cniscope_impair_n{node_index}_{direction}"


def loss_ruleset(node_index: int, direction: str, loss_pct: float) -> str:
    """nft script for the fabric: drop ``loss_pct`` % of the frames node I sends (egress) or is
    sent (ingress), chosen by the kernel's PRNG per frame, before any other bridge processing."""
    port = f"n{node_index}"
    hook, match = ("prerouting", f'iifname "{port}"') if direction == "egress" else \
        ("postrouting", f'oifname "{port}"')
    threshold = round(loss_pct / 100 * LOSS_SCALE)
    return (f"table bridge {loss_table(node_index, direction)} {{\n"
            f"  chain impair {{\n"
            f"    type filter hook {hook} priority -300; policy accept;\n"
            f"    {match} numgen random mod {LOSS_SCALE} < {threshold} counter drop\n"
            f"  }}\n}}\n")


def delayline_argv(direction: str, imp: Impairment, stats_path: str = "") -> list[str]:
    argv = [sys.executable, "-m", "cniscope.lab.delayline", "--queue", str(QUEUE[direction]),
            "--delay-us", f"{imp.delay_us:g}", "--max-seconds", f"{imp.max_seconds:g}"]
    return argv + (["--stats", stats_path] if stats_path else [])


def role(node: str, direction: str) -> str:
    return f"delayline:{node}:{direction}"


def describe(done: Applied) -> str:
    imp = done.impairment
    bits = []
    if imp.get("delay_us"):
        how = done.delay_method + (f" ({done.netem_unavailable})" if done.netem_unavailable else "")
        bits.append(f"delay {float(imp['delay_us']) / 1000:g} ms via {how}")
    if imp.get("loss_pct"):
        bits.append(f"loss {float(imp['loss_pct']):g}% via nftables bridge numgen in the fabric")
    if imp.get("rate_bps"):
        bits.append(f"rate {int(imp['rate_bps']) / 1e6:g} Mbit/s via tbf")
    return f"{done.node} {imp.get('direction')}: " + ("; ".join(bits) if bits else "no impairment")
