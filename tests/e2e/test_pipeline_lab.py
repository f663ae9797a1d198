"""Delivery in the lab with real processes: the collector down or SIGKILLed, an agent SIGKILLed, a
half-open link. Ground truth is the SQLite file itself: every (node, boot_id, seq) exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cniscope.api.v1 import cluster_pb2
from cniscope.client.grpc_collector import list_nodes
from cniscope.lab import netns, procs
from cniscope.lab.lab import Lab
from tests.waiting import wait_for

sys.path.insert(0, str(Path(__file__).parents[1]))
from caps import IN_CI  # type: ignore[import-not-found]  # noqa: E402
from conftest import wait_connected  # type: ignore[import-not-found]  # noqa: E402

pytestmark = [pytest.mark.netns]

# CI holds the collector down for 60 s; a local run uses 10 s; `make bench` sets 300 s
DOWN_SECONDS = float(os.environ.get("CNISCOPE_TEST_DOWN_SECONDS", 60.0 if IN_CI else 10.0))


def _rows(db: Path) -> dict[tuple[str, str], list[int]]:
    con = sqlite3.connect(db, timeout=10)
    try:
        out: dict[tuple[str, str], list[int]] = {}
        for node, boot, seq in con.execute("SELECT node, boot_id, seq FROM batches ORDER BY node, boot_id, seq"):
            out.setdefault((node, boot), []).append(seq)
        return out
    finally:
        con.close()


def _assert_exactly_once(rows: dict[tuple[str, str], list[int]]) -> None:
    for key, seqs in rows.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"{key}: gaps or duplicates in {seqs[:5]}…{seqs[-5:]}"


def _nodes(lab: Lab) -> dict[str, cluster_pb2.NodeState]:
    return {n.node: n for n in asyncio.run(list_nodes(lab.local_collector, deadline=5))}


def _until(cond: Callable[[], bool], within: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"{what}: not within {within}s")
        time.sleep(0.2)
    return time.monotonic() - t0


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lab processes inherit this environment: a short backoff cap keeps reconnects bounded in time."""
    monkeypatch.setenv("CNISCOPE_BACKOFF_MAX", "3")


def test_collector_down_while_agents_produce_loses_nothing(lab: Lab, tmp_path: Path, fast_env: None) -> None:
    db = tmp_path / "c.db"
    lab.start_cluster(db=db, sample_interval=1.0)
    wait_connected(lab, 3)
    assert lab.stop_role("collector")
    t_down = time.monotonic()
    time.sleep(DOWN_SECONDS)
    lab.start_cluster(db=db, sample_interval=1.0)
    wait_connected(lab, 3, timeout=30)
    produced_by = time.monotonic() - t_down

    def caught_up() -> bool:
        rows = _rows(db)
        return len(rows) == 3 and all(len(s) >= produced_by for s in rows.values())

    _until(caught_up, 30, "every agent's backlog durable")
    rows = _rows(db)
    assert len(rows) == 3, rows.keys()  # one boot per node: nobody restarted
    _assert_exactly_once(rows)
    nodes = _nodes(lab)
    assert all(n.spool_dropped == 0 for n in nodes.values())


def test_collector_sigkilled_mid_write_keeps_every_committed_row(lab: Lab, tmp_path: Path, fast_env: None) -> None:
    db = tmp_path / "c.db"
    lab.start_cluster(db=db, sample_interval=0.05)  # ~60 commits/s across three agents
    wait_connected(lab, 3)
    wait_for(lambda: sum(len(s) for s in _rows(db).values()) > 60, 30, "more than 60 committed batches")
    rec = lab.record("collector")
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    _until(lambda: lab.record("collector") is None or not os.path.exists(f"/proc/{rec.pid}/stat")
           or open(f"/proc/{rec.pid}/stat").read().split(") ")[1][0] == "Z", 10, "collector gone")
    before = _rows(db)  # what was committed when it died
    assert sum(len(s) for s in before.values()) > 60
    lab.start_cluster(db=db, sample_interval=0.05)
    wait_connected(lab, 3, timeout=30)

    def grown() -> dict[tuple[str, str], list[int]]:
        rows = _rows(db)
        return rows if all(len(rows.get(key, [])) > len(seqs) for key, seqs in before.items()) else {}

    after = wait_for(grown, 30, "new batches from every agent after the restart")
    for key, seqs in before.items():
        assert set(seqs) <= set(after[key]), f"{key}: committed rows lost"
        assert len(after[key]) > len(seqs)
    _assert_exactly_once(after)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_agent_sigkilled_and_restarted_gets_a_new_boot_and_the_gap_shows(lab: Lab, tmp_path: Path,
                                                                          fast_env: None) -> None:
    db = tmp_path / "c.db"
    lab.start_cluster(db=db, sample_interval=0.2)
    wait_connected(lab, 3)
    first_boot = _nodes(lab)["node1"].boot_id
    wait_for(lambda: len(_rows(db).get(("node1", first_boot), [])) >= 3, 20, "batches from node1's first boot")
    rec = lab.record("agent:node1")
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: not procs.alive(rec), 10, "the killed agent to be gone")
    lab.start_cluster(db=db, sample_interval=0.2)  # restarts only what is dead

    def new_boot() -> bool:
        n = _nodes(lab).get("node1")
        return n is not None and n.boot_id != first_boot and n.status == 1

    _until(new_boot, 20, "node1 back with a new boot id")
    node1 = _nodes(lab)["node1"]
    wait_for(lambda: ("node1", node1.boot_id) in _rows(db), 20, "a stored batch from node1's new boot")
    assert node1.boots == 2
    assert node1.reconnects >= 1
    rows = _rows(db)
    boots = sorted(b for (n, b) in rows if n == "node1")
    assert sorted([first_boot, node1.boot_id]) == boots
    _assert_exactly_once(rows)
    logs = Path([p["log"] for p in lab.status()["processes"] if p["role"] == "collector"][0]).read_text()
    assert f"agent restarted: boot {first_boot[:8]}" in logs


def test_half_open_link_is_noticed_and_healed(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNISCOPE_KEEPALIVE_TIME", "4")
    monkeypatch.setenv("CNISCOPE_KEEPALIVE_TIMEOUT", "2")
    monkeypatch.setenv("CNISCOPE_BACKOFF_MAX", "2")
    db = tmp_path / "c.db"
    lab.start_cluster(db=db, sample_interval=0.5)
    wait_connected(lab, 3)
    node = lab.nodes()[0]
    log = Path([p["log"] for p in lab.status()["processes"] if p["role"] == "agent:node1"][0])
    before = log.read_text().count("unreachable")
    reconnects = _nodes(lab)["node1"].reconnects
    rules = tmp_path / "halfopen.nft"
    rules.write_text("table inet cnshalfopen {\n"
                     "  chain out { type filter hook output priority 0; ip daddr 198.18.0.2 drop; }\n"
                     "  chain in { type filter hook input priority 0; ip saddr 198.18.0.2 drop; }\n}\n")
    netns.exec_in(node.netns, ["nft", "-f", str(rules)])
    try:
        noticed = _until(lambda: log.read_text().count("unreachable") > before, 60, "agent notices the dead link")
        print(f"half-open link noticed after {noticed:.1f} s")
        assert noticed <= 4 + 2 + 6, noticed  # keepalive time + timeout, plus one ping period of slack
    finally:
        netns.exec_in(node.netns, ["nft", "delete table inet cnshalfopen"], check=False)

    def healed() -> bool:
        n = _nodes(lab)["node1"]
        return n.status == 1 and n.reconnects > reconnects

    _until(healed, 30, "node1 reconnected after the rule went")
    assert "cnshalfopen" not in netns.exec_in(node.netns, ["nft", "list", "tables"])
    _assert_exactly_once(_rows(db))
