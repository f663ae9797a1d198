"""Probe benchmarks: fidelity against the bare tools, and the agent's own CPU during a tcp probe.

Run: .venv/bin/python benchmarks/bench_probes.py [--quick]

* fidelity: agent-run ``tcp`` vs bare ``iperf3`` and agent-run ``rtt`` p50 vs bare ``ping``, node1 →
  node2 host path of one lab, in back-to-back pairs whose order flips each time; the median of the
  per-pair ratios (target: tcp within 2 %, rtt p50 within 5 %). TCP over veth is CPU-bound here,
  so by default node1's eth0 is shaped with tbf (2 Gbit/s): both runs are then limited by the path
  and the ratio shows the agent's own effect; ``--shape ''`` measures unshaped (anything else
  running on the machine then shows up as spread between pairs). The lab is torn down after.
* agent CPU during a 10 s ``tcp`` probe, excluding iperf3 (the agent process's own user+system
  time; iperf3 is a separate process), for the source and the target agent, next to the same
  agents' idle CPU over an equal window (target ≤ 50 millicores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from probe_helpers import run_probe, running_cluster  # type: ignore[import-not-found]  # noqa: E402

from cniscope.agent.probes.iperf3_parse import parse_tcp  # noqa: E402
from cniscope.agent.probes.ping_parse import parse_ping  # noqa: E402
from cniscope.lab.lab import Lab  # noqa: E402

PORT = 5299  # bare iperf3 runs on its own port so it never meets the agent's one-off server


def ns(lab: Lab, i: int) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{lab.node_ns(i)}", "--"]


def bare_tcp(lab: Lab, duration: float) -> float:
    dst = lab.nodes()[1].host_ip
    srv = subprocess.Popen([*ns(lab, 2), "iperf3", "-s", "-1", "-B", dst, "-p", str(PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run([*ns(lab, 1), "iperf3", "-c", dst, "-p", str(PORT), "-J", "-t", f"{duration:g}"],
                             capture_output=True, text=True, timeout=duration + 20, check=False).stdout
        return parse_tcp(out).received_bps / 1e9
    finally:
        srv.kill()
        srv.wait()


def agent_tcp(lab: Lab, duration: float) -> float:
    r, _ = asyncio.run(run_probe(lab.local_collector, "tcp", "node1", "node2", "host", duration=f"{duration:g}"))
    if not r.ok:
        raise SystemExit(f"agent tcp failed: {r.error}")
    return float(r.figures["received_gbps"])


def bare_rtt(lab: Lab, count: int) -> float:
    out = subprocess.run([*ns(lab, 1), "ping", "-n", "-c", str(count), "-i", "0.05", lab.nodes()[1].host_ip],
                         capture_output=True, text=True, timeout=count + 10, check=False).stdout
    return float(parse_ping(out).figures()["p50_us"])


def agent_rtt(lab: Lab, count: int) -> float:
    r, _ = asyncio.run(run_probe(lab.local_collector, "rtt", "node1", "node2", "host",
                                 count=str(count), interval="0.05"))
    if not r.ok:
        raise SystemExit(f"agent rtt failed: {r.error}")
    return float(r.figures["p50_us"])


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)  # the process itself; children (iperf3) are not included


def agent_pids(lab: Lab) -> dict[str, int]:
    out = {}
    for name in ("node1", "node2"):
        rec = lab.record(f"agent:{name}")
        assert rec is not None
        out[name] = rec.pid
    return out


def cpu_window(lab: Lab, seconds: float, during_tcp: bool) -> dict[str, float]:
    pids = agent_pids(lab)
    before = {n: cpu_s(p) for n, p in pids.items()}
    t0 = time.monotonic()
    if during_tcp:
        agent_tcp(lab, seconds)
    else:
        time.sleep(seconds)
    wall = time.monotonic() - t0
    return {n: (cpu_s(p) - before[n]) / wall * 1000.0 for n, p in pids.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter runs (2 s tcp, 2 pairs)")
    ap.add_argument("--shape", default="2gbit",
                    help="tbf rate on node1's eth0 so TCP is limited by the path, not by the 2 CPUs "
                         "('' = unshaped)")
    args = ap.parse_args()
    reps, dur, pings = (2, 2.0, 50) if args.quick else (6, 3.0, 100)
    os.environ["CNISCOPE_MESH_INTERVAL"] = "0"  # no background mesh while measuring
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp), nodes=2) as lab:
        if args.shape:
            subprocess.run([*ns(lab, 1), "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate",
                            args.shape, "burst", "512kb", "latency", "50ms"], check=True)
            print(f"node1 eth0 shaped with tbf {args.shape}: both sides measure the path, not the CPU")
        tcp_bare, tcp_agent, rtt_bare, rtt_agent = [], [], [], []
        for i in range(reps):  # pairs, the order flipped every time so drift hits both sides alike
            pair = [lambda: tcp_bare.append(bare_tcp(lab, dur)), lambda: tcp_agent.append(agent_tcp(lab, dur)),
                    lambda: rtt_bare.append(bare_rtt(lab, pings)), lambda: rtt_agent.append(agent_rtt(lab, pings))]
            order = [0, 1, 2, 3] if i % 2 == 0 else [1, 0, 3, 2]
            for k in order:
                pair[k]()
        tcp_ratio = statistics.median(a / b for a, b in zip(tcp_agent, tcp_bare, strict=True))
        rtt_ratio = statistics.median(a / b for a, b in zip(rtt_agent, rtt_bare, strict=True))
        mb, ma = statistics.median(tcp_bare), statistics.median(tcp_agent)
        rb, ra = statistics.median(rtt_bare), statistics.median(rtt_agent)
        print(f"tcp  bare iperf3 median {mb:.3f} Gbit/s  agent median {ma:.3f} Gbit/s  "
              f"median pair ratio {tcp_ratio:.3f}  (bare {[round(x, 2) for x in tcp_bare]} "
              f"agent {[round(x, 2) for x in tcp_agent]})")
        print(f"rtt  bare ping p50 median {rb:.1f} µs  agent p50 median {ra:.1f} µs  "
              f"median pair ratio {rtt_ratio:.3f}  (bare {rtt_bare} agent {rtt_agent})")
        idle = cpu_window(lab, 10.0, during_tcp=False)
        busy = cpu_window(lab, 10.0, during_tcp=True)
        for n in ("node1", "node2"):
            role = "source" if n == "node1" else "target"
            print(f"agent CPU ({role} {n}) during a 10 s tcp probe, excluding iperf3: {busy[n]:.1f} millicores "
                  f"(idle {idle[n]:.1f} millicores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
