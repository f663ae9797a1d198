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

What an impairment is and the commands it takes are :mod:`cniscope.lab.impair_plan`'s; this module
runs them. A call sets the node's whole impairment for the given direction(s): what is not asked for is
removed. ``clear`` removes every rule, qdisc and process this module made for the node.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cniscope.core.errors import LabError
from cniscope.lab import netns, procs
from cniscope.lab.impair_plan import (
    CHAIN,
    CHILD_HANDLE,
    HOOK,
    QUEUE,
    ROOT_HANDLE,
    Applied,
    Impairment,
    delayline_argv,
    loss_ruleset,
    loss_table,
    netem_args,
    queue_rules,
    role,
    tbf_args,
)
from cniscope.lab.lab import Lab
from cniscope.lab.lab_node import LabNode
from cniscope.lab.nfqueue_wire import parse_bound_queues


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
    # the lab names the fabric-side end of node I's link "nI" (see lab_network.build_node)
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


def _alive(rec: procs.ProcRecord) -> bool:
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
