"""Capability refresh before a run: how long a run waits for the agents' fresh reports.

Run (root): .venv/bin/python benchmarks/bench_capability_refresh.py [--services 15000] [--runs 5]

A 3-node lab; each measurement is a real run through the collector's Runs API (rtt only, one
repetition) timed from its "refreshing" progress message to its "fingerprint" one, with the run's
fingerprint note (which node's unit was still running). Baseline: the same on empty namespaces.
Then every node gets kube-proxy's iptables ruleset for ``--services`` Services and keeps reloading
it (a full sync after another, as a churning kube-proxy does), and the runs are repeated. Also shown:
the whole collection time from each node's last complete report. The lab is torn down at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cniscope.api.v1 import common_pb2, runs_pb2, runs_pb2_grpc
from cniscope.core import grpcutil, stats
from cniscope.lab import kubeproxy
from cniscope.lab.lab import Lab, LabSpec

RELOAD = """
import sys, time
from cniscope.lab import kubeproxy
svcs = kubeproxy.plan(int(sys.argv[2]), sys.argv[3].split(","), port=7411, target_port=7411)
while True:
    kubeproxy.load(sys.argv[1], svcs, "iptables-nft", timeout=600)
"""


async def one_run(address: str) -> tuple[float, str]:
    async with grpcutil.insecure_channel(address) as ch:
        stub = runs_pb2_grpc.RunsStub(ch)
        t_ref, waited, note = None, float("nan"), ""
        req = runs_pb2.StartRunRequest(label="refresh", suite="quick", only=["rtt"], repeat=1, pairs="auto")
        async for upd in stub.StartRun(req):
            if upd.WhichOneof("body") == "progress":
                if upd.progress.message.startswith("refreshing"):
                    t_ref = time.monotonic()
                elif upd.progress.message.startswith("fingerprint") and t_ref is not None:
                    waited = time.monotonic() - t_ref
            else:
                note = upd.run.fingerprint.get("note", "")
        return waited, note


def collection_seconds(db: Path) -> list[float]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        reps = [common_pb2.CapabilityReport.FromString(r[0]) for r in conn.execute("SELECT report FROM capabilities")]
    finally:
        conn.close()
    return [sum(u.duration_seconds for u in r.units) for r in reps if not r.HasField("unfinished")]


def measure(lab: Lab, db: Path, runs: int, label: str) -> None:
    waits, notes, whole = [], [], []
    for _ in range(runs):
        w, note = asyncio.run(one_run(lab.local_collector))
        waits.append(w)
        notes.append(note)
        time.sleep(3)   # the whole report of a slow refresh arrives after the run went on
        whole += collection_seconds(db)
    named = sum(1 for n in notes if "still running" in n)
    late = sum(1 for n in notes if "not refreshed" in n)
    print(f"| {label} | {stats.median(waits):.2f} s | {max(waits):.2f} s | {stats.median(whole):.2f} s | "
          f"{max(whole):.2f} s | {named}/{runs} | {late}/{runs} |")
    for n in sorted(set(notes) - {""})[:2]:
        print(f"|   note: {n[:150]} | | | | | | |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=15000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from bench_runs import wait_nodes  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(LabSpec(name=f"bcr{os.getpid() % 1000}", nodes=3), state_root=Path(tmp) / "labs")
        db = Path(tmp) / "c.db"
        loops: list[subprocess.Popen[bytes]] = []
        try:
            lab.up()
            lab.start_cluster(db=db, sample_interval=2.0)
            wait_nodes(lab.local_collector, 3)
            nodes = lab.nodes()
            eps = ",".join(p["ip"] for n in nodes for p in n.pods)
            print(f"capability refresh wait, 3-node lab, {args.runs} runs per row; agent budget "
                  f"{os.environ.get('CNISCOPE_CAPABILITIES_BUDGET', '5')} s, collector wait 10 s")
            print("| rules on every node | wait median | wait max | whole collection median | max | "
                  "slow unit named | not refreshed |")
            print("|---|---|---|---|---|---|---|")
            measure(lab, db, args.runs, "none (baseline)")
            svcs = kubeproxy.plan(args.services, eps.split(","), port=7411, target_port=7411)
            for n in nodes:
                kubeproxy.load(n.netns, svcs, "iptables-nft", timeout=600)
            loops = [subprocess.Popen([sys.executable, "-c", RELOAD, n.netns, str(args.services), eps])
                     for n in nodes]
            measure(lab, db, args.runs, f"{kubeproxy.nat_rule_count(args.services):,}, reloaded continuously")
        finally:
            for p in loops:
                p.kill()
                p.wait()
            lab.down()


if __name__ == "__main__":
    main()
