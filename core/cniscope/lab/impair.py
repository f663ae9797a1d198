"""Known impairments on a lab node's fabric link: the ground truth the probes are held to.

Each impairment uses what works on this kernel, and says which it used:

* **rate** — ``tbf`` on the device that transmits in that direction: the node's ``eth0`` for
  egress, the node's bridge port ``nI`` in the fabric namespace for ingress;
* **loss** — a random drop (``numgen random``) on the wire, in an nftables *bridge* table of the
  fabric namespace (``cniscope_impair_nI_egress`` matches frames entering the bridge from node I,
  ``…_ingress`` frames leaving towards it). A netfilter DROP inside the node's own namespace — an
  iptables ``statistic`` rule in OUTPUT/POSTROUTING — is reported to local senders as ``EPERM``
  (iperf3 aborts: "unable to write to stream socket"), so it would not be loss on the wire;
* **delay** — ``netem`` where the kernel has it (on the same device as ``tbf``, which becomes its
  child); else, for egress only, an iptables NFQUEUE rule (``--queue-bypass``: fail-open) in its
  own mangle chain ``CNISCOPE-IMPAIR-OUT`` (jumped to from POSTROUTING ``-o eth0``) feeding
  :mod:`cniscope.lab.delayline`, started with ``Lab.spawn`` in the node's namespace so ``lab down``
  ends it by PID. A queued packet is not an error for its sender. Ingress delay without netem is
  refused: a packet held at PREROUTING keeps its receive timestamp, so local sockets that read it
  (ping) would not see the delay.

A call sets the node's whole impairment for the given direction(s): what is not asked for is
removed. ``clear`` removes every rule, qdisc and process this module made for the node.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cniscope.core.errors import LabError, ValidationError
from cniscope.core.params import Param, ParamSet
from cniscope.lab import netns
from cniscope.lab.delayline import parse_bound_queues
from cniscope.lab.lab import Lab
from cniscope.lab.lab_node import LabNode

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


# ---- kernel access -------------------------------------------------------------------------------
def _ipt(ns: str, args: list[str], check: bool = True) -> str:
    return netns.exec_in(ns, ["iptables", "-w", "5", "-t", "mangle", *args], check=check)


def _tc(ns: str, args: list[str], check: bool = True) -> str:
    return netns.exec_in(ns, ["tc", *args], check=check)


def _node(lab: Lab, name: str) -> LabNode:
    for n in lab.nodes():
        if n.name == name:
            return n
    raise LabError(f"no node {name!r} in lab {lab.spec.name!r} ({', '.join(n.name for n in lab.nodes())})")


def _device(lab: Lab, node: LabNode, direction: str) -> tuple[str, str]:
    """(namespace, device) whose transmit queue carries ``direction`` of the node's fabric link."""
    # the lab names the fabric-side end of node I's link "nI" (see Lab._build_node)
    return (node.netns, "eth0") if direction == "egress" else (lab.fabric, f"n{node.index}")


def root_qdisc(ns: str, dev: str) -> dict[str, Any] | None:
    out = _tc(ns, ["-j", "qdisc", "show", "dev", dev, "root"], check=False)
    try:
        items = json.loads(out or "[]")
    except ValueError:
        return None
    for q in items:
        if isinstance(q, dict) and q.get("root"):
            return q
    return items[0] if items and isinstance(items[0], dict) else None


def _ours(q: dict[str, Any] | None) -> bool:
    return q is not None and str(q.get("handle", "")) == ROOT_HANDLE


def _state_path(lab: Lab, node: str, direction: str) -> Path:
    return lab.dir / "impair" / f"{node}.{direction}.json"


def apply(lab: Lab, node_name: str, imp: Impairment) -> Applied:
    """Set ``imp`` on the node (replacing what was there in those directions)."""
    node = _node(lab, node_name)
    if "ingress" in imp.directions() and imp.delay_us and not netem_available(lab, node):
        raise LabError("ingress delay needs sch_netem, which this kernel lacks; "
                       "impair the sending node's egress instead (cniscope lab impair PEER --delay …)")
    clear(lab, node_name, directions=imp.directions())
    done = Applied(node=node_name, impairment=asdict(imp))
    try:
        for d in imp.directions():
            _apply_direction(lab, node, d, imp, done)
    except Exception:
        clear(lab, node_name, directions=imp.directions())
        raise
    _save(lab, done)
    return done


def _apply_direction(lab: Lab, node: LabNode, d: str, imp: Impairment, done: Applied) -> None:
    ns, dev = _device(lab, node, d)
    netem = False
    if imp.delay_us:
        cmd = ["qdisc", "replace", "dev", dev, "root", "handle", ROOT_HANDLE, *netem_args(imp.delay_us)]
        try:
            _tc(ns, cmd)
            netem = (root_qdisc(ns, dev) or {}).get("kind") == "netem"
            why = "" if netem else "the qdisc did not take"
        except LabError as exc:   # "Specified qdisc kind is unknown." without sch_netem
            why = str(exc).rsplit(": ", 1)[-1]
        if netem:
            done.delay_method = "netem"
            done.commands.append(shlex.join(["tc", *cmd]))
        else:
            done.netem_unavailable = f"sch_netem unavailable: {why}"
    if imp.rate_bps:
        if netem:
            cmd = ["qdisc", "replace", "dev", dev, "parent", ROOT_HANDLE + "1", "handle", CHILD_HANDLE,
                   *tbf_args(imp.rate_bps)]
        else:
            cmd = ["qdisc", "replace", "dev", dev, "root", "handle", ROOT_HANDLE, *tbf_args(imp.rate_bps)]
        _tc(ns, cmd)
        done.commands.append(shlex.join(["tc", *cmd]))
    use_queue = bool(imp.delay_us) and not netem
    if use_queue:
        done.delay_method = "delayline"
        r = role(node.name, d)
        stats = str(lab.dir / "impair" / f"{r.replace(':', '-')}.stats.json")
        (lab.dir / "impair").mkdir(parents=True, exist_ok=True)
        rec = lab.spawn(r, node.netns, delayline_argv(d, imp, stats))
        done.processes.append(r)
        _wait_bound(lab, node.netns, QUEUE[d], rec.log, r)
    if use_queue:
        for rule in queue_rules(d):
            _ipt(node.netns, rule)
            done.commands.append(shlex.join(["iptables", "-t", "mangle", *rule]))
    if imp.loss_pct:
        script = loss_ruleset(node.index, d, imp.loss_pct)
        netns.run(netns.nsenter_argv(lab.fabric, ["nft", "-f", "-"]), input=script)
        done.commands.append(f"nft -f - <<< {script!r}")


def _wait_bound(lab: Lab, ns: str, queue: int, log: str, r: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = netns.exec_in(ns, ["cat", "/proc/net/netfilter/nfnetlink_queue"], check=False)
        if queue in parse_bound_queues(text):
            return
        rec = lab.record(r)
        if rec is None or not _alive(rec):
            break
        time.sleep(0.05)
    try:
        tail = open(log).read()[-600:].strip()
    except OSError:
        tail = ""
    lab.stop_role(r)
    raise LabError(f"the delay line for queue {queue} did not bind within {timeout:.0f}s"
                   + (f": {tail}" if tail else ""))


def _alive(rec: Any) -> bool:
    from cniscope.lab import procs

    return procs.alive(rec)


def netem_available(lab: Lab, node: LabNode) -> bool:
    """Try netem on the node's loopback (harmless) and take it away again."""
    _tc(node.netns, ["qdisc", "add", "dev", "lo", "root", "handle", ROOT_HANDLE, "netem", "delay", "1us"],
        check=False)
    if (root_qdisc(node.netns, "lo") or {}).get("kind") == "netem":
        _tc(node.netns, ["qdisc", "del", "dev", "lo", "root"], check=False)
        return True
    return False


def clear(lab: Lab, node_name: str, directions: list[str] | None = None) -> list[str]:
    """Remove every chain, qdisc and delay line this module made on the node; what was removed."""
    node = _node(lab, node_name)
    removed: list[str] = []
    for d in directions or ["egress", "ingress"]:
        if d in CHAIN and netns.exists(node.netns):
            removed += _clear_chain(node.netns, d)
        table = loss_table(node.index, d)
        if netns.exists(lab.fabric) and table in netns.exec_in(lab.fabric, ["nft", "list", "tables"], check=False):
            netns.exec_in(lab.fabric, ["nft", "delete", "table", "bridge", table])
            removed.append(f"{lab.fabric}: nft bridge table {table}")
        if d in QUEUE:
            r = role(node_name, d)
            if lab.record(r) is not None:
                lab.stop_role(r)
                removed.append(f"process {r}")
        ns, dev = _device(lab, node, d)
        if netns.exists(ns) and _ours(root_qdisc(ns, dev)):
            _tc(ns, ["qdisc", "del", "dev", dev, "root"])
            removed.append(f"{ns}: qdisc {ROOT_HANDLE} on {dev}")
        path = _state_path(lab, node_name, d)
        if path.exists():
            path.unlink()
    return removed


def _clear_chain(ns: str, d: str) -> list[str]:
    chain = CHAIN[d]
    hook, flag = HOOK[d]
    removed = []
    for _ in range(16):   # bounded: a jump added twice is removed twice
        try:
            _ipt(ns, ["-D", hook, flag, "eth0", "-j", chain])
        except LabError:
            break
        removed.append(f"{ns}: mangle {hook} jump to {chain}")
    if _ipt(ns, ["-S", chain], check=False).strip():
        _ipt(ns, ["-F", chain])
        _ipt(ns, ["-X", chain])
        removed.append(f"{ns}: mangle chain {chain}")
    return removed


def _save(lab: Lab, done: Applied) -> None:
    for d in Impairment(direction=str(done.impairment["direction"])).directions():
        path = _state_path(lab, done.node, d)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**asdict(done), "direction": d}, indent=2))


def _load(lab: Lab, node: str, direction: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_state_path(lab, node, direction).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def show(lab: Lab, node_name: str) -> dict[str, Any]:
    """What is in place now, read back from the kernel and the lab's process table."""
    node = _node(lab, node_name)
    out: dict[str, Any] = {"node": node_name, "set": {}, "kernel": {}}
    for d in ("egress", "ingress"):
        out["set"][d] = _load(lab, node_name, d)
        ns, dev = _device(lab, node, d)
        rules = _ipt(node.netns, ["-S", CHAIN[d]], check=False).split("\n") if d in CHAIN else []
        proc = lab.record(role(node_name, d)) if d in QUEUE else None
        loss = netns.exec_in(lab.fabric, ["nft", "list", "table", "bridge", loss_table(node.index, d)],
                             check=False)
        out["kernel"][d] = {
            "qdisc": root_qdisc(ns, dev) if netns.exists(ns) else None,
            "rules": [r for r in rules if r.startswith("-A")],
            "loss": [ln.strip() for ln in loss.splitlines() if "numgen" in ln],
            "delayline": ({"pid": proc.pid, "alive": _alive(proc)} if proc else None),
        }
    return out


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
