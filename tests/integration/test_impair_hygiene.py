"""``lab impair`` leaves nothing behind and fails open: clear removes every qdisc, rule, table and
process it made; ``lab down`` ends the delay line; a killed or expired delay line lets traffic
through undelayed. Ground truth here is bare ``ping`` between lab namespaces."""

from __future__ import annotations

import os
import re
import signal
import statistics
import time
from pathlib import Path

import pytest

from cniscope.core.errors import LabError
from cniscope.lab import impair, netns, procs
from cniscope.lab.impair_plan import QUEUE, Impairment, role
from cniscope.lab.lab import Lab
from cniscope.lab.nfqueue_wire import parse_bound_queues

pytestmark = [pytest.mark.netns]


def ping_ms(lab: Lab, count: int = 20) -> tuple[float, int]:
    """Median RTT (ms) and replies for node1 → node2's host address."""
    node1, node2 = lab.nodes()[:2]
    out = netns.exec_in(node1.netns, ["ping", "-n", "-c", str(count), "-i", "0.02", "-W", "1", node2.host_ip],
                        check=False)
    rtts = [float(x) for x in re.findall(r"time=([0-9.]+) ms", out)]
    return (statistics.median(rtts) if rtts else float("nan")), len(rtts)


def kernel_view(lab: Lab) -> dict[str, object]:
    n1 = lab.nodes()[0]
    return {
        "eth0": netns.exec_in(n1.netns, ["tc", "qdisc", "show", "dev", "eth0"]),
        "n1": netns.exec_in(lab.fabric, ["tc", "qdisc", "show", "dev", "n1"]),
        "mangle": netns.exec_in(n1.netns, ["iptables", "-w", "5", "-t", "mangle", "-S"]),
        "nft": netns.exec_in(lab.fabric, ["nft", "list", "tables"]),
        "queues": parse_bound_queues(netns.exec_in(n1.netns, ["cat", "/proc/net/netfilter/nfnetlink_queue"])),
    }


def test_clear_removes_every_rule_qdisc_table_and_process(lab: Lab) -> None:
    clean = kernel_view(lab)
    impair.apply(lab, "node1", Impairment(delay_us=1000, loss_pct=1, rate_bps=200_000_000))
    impair.apply(lab, "node1", Impairment(loss_pct=1, rate_bps=300_000_000, direction="ingress"))
    rec = lab.record(role("node1", "egress"))
    assert rec is not None
    assert procs.alive(rec)
    on = kernel_view(lab)
    assert "tbf c5:" in str(on["eth0"])
    assert "tbf c5:" in str(on["n1"])
    assert "CNISCOPE-IMPAIR-OUT" in str(on["mangle"])
    assert "cniscope_impair_n1_egress" in str(on["nft"])
    assert "cniscope_impair_n1_ingress" in str(on["nft"])
    assert QUEUE["egress"] in on["queues"]  # type: ignore[operator]

    removed = impair.clear(lab, "node1")
    assert len(removed) == 7, removed   # jump, chain, 2 nft tables, process, 2 qdiscs
    assert kernel_view(lab) == clean
    assert not procs.alive(rec)
    assert lab.record(role("node1", "egress")) is None
    assert impair.clear(lab, "node1") == []          # twice: nothing left to remove
    assert not list((lab.dir / "impair").glob("node1.*.json"))   # the delay line stats stay


def test_setting_a_direction_replaces_it_and_leaves_the_other(lab: Lab) -> None:
    impair.apply(lab, "node1", Impairment(rate_bps=300_000_000, direction="ingress"))
    impair.apply(lab, "node1", Impairment(loss_pct=1))
    impair.apply(lab, "node1", Impairment(rate_bps=200_000_000))   # egress: loss gone, rate set
    view = kernel_view(lab)
    assert "cniscope_impair_n1_egress" not in str(view["nft"])
    assert "tbf c5:" in str(view["eth0"])
    assert "tbf c5:" in str(view["n1"])
    shown = impair.show(lab, "node1")
    assert shown["set"]["egress"]["impairment"]["rate_bps"] == 200_000_000
    assert shown["set"]["ingress"]["impairment"]["rate_bps"] == 300_000_000


def test_ingress_delay_without_netem_is_refused_and_changes_nothing(lab: Lab) -> None:
    impair.apply(lab, "node1", Impairment(loss_pct=1))
    before = kernel_view(lab)
    with pytest.raises(LabError, match="ingress delay needs sch_netem"):
        impair.apply(lab, "node1", Impairment(delay_us=1000, direction="both"))
    assert kernel_view(lab) == before


def test_lab_down_ends_the_delay_line(lab_factory: object, tmp_path: Path) -> None:
    lab: Lab = lab_factory(nodes=2)  # type: ignore[operator]
    impair.apply(lab, "node1", Impairment(delay_us=1000))
    rec = lab.record(role("node1", "egress"))
    assert rec is not None
    assert procs.alive(rec)
    lab.down()
    assert not procs.alive(rec)
    assert not [n for n in netns.list_names() if n.startswith(lab.prefix + "-")]


def test_a_killed_delay_line_fails_open(lab: Lab) -> None:
    base, _ = ping_ms(lab)
    impair.apply(lab, "node1", Impairment(delay_us=3000))
    delayed, got = ping_ms(lab)
    assert got == 20
    assert delayed - base > 2.5
    rec = lab.record(role("node1", "egress"))
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)        # the lab's own process, by its PID
    deadline = time.monotonic() + 5
    while procs.alive(rec) and time.monotonic() < deadline:
        time.sleep(0.05)
    after, got = ping_ms(lab)
    assert got == 20, "traffic must flow with the delay line gone (--queue-bypass)"
    assert after - base < 3.0 / 2, (base, after)  # undelayed: a packet through the line would add 3 ms
    assert "CNISCOPE-IMPAIR-OUT" in str(kernel_view(lab)["mangle"])   # the rule is still there
    assert impair.clear(lab, "node1")


def test_the_delay_line_ends_itself_after_its_lifetime(lab: Lab) -> None:
    base, _ = ping_ms(lab, count=5)
    impair.apply(lab, "node1", Impairment(delay_us=3000, max_seconds=2))
    rec = lab.record(role("node1", "egress"))
    assert rec is not None
    deadline = time.monotonic() + 8
    while procs.alive(rec) and time.monotonic() < deadline:   # a zombie counts as ended
        time.sleep(0.1)
    assert not procs.alive(rec), "the delay line outlived its --max-seconds"
    after, got = ping_ms(lab, count=5)
    assert got == 5
    assert after - base < 3.0 / 2, (base, after)  # undelayed: a packet through the line would add 3 ms
