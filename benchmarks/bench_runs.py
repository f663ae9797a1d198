"""Service-scaling benchmark: kube-proxy-shaped rules for N Services on every node of a 3-node lab.

Run (root): .venv/bin/python benchmarks/bench_runs.py [--counts 4,104,1000,5000] [--repeat 5]

Through the collector's Runs API (the same path as ``cniscope bench services``), each backend —
iptables-nft, iptables-legacy, kube-proxy's nftables verdict map and the lab's eBPF socket LB
(``ebpf``: Cilium-style cgroup connect4 programs over cilium_lb4_* maps) — is programmed with N
Services, round-robin over N per repetition, and pod → ClusterIP connect setup is measured
(200 connects per repetition, median per repetition, the best repetition as the floor). The figure
is the floor at N divided by the floor at the smallest N, beside the same ratio for the verdict map
in the same run; plus the slopes in ns per NAT rule (map entry for ebpf) and per Service, and the
time to load the rules. With ``--tracer``
node1's agent (the source) runs tcpconnlat on its probe pod, and the in-kernel mean setup
(SYN_SENT → ESTABLISHED) is printed beside the userspace one. The lab is torn down at the end,
whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from cniscope.api.v1 import runs_pb2, runs_pb2_grpc
from cniscope.collector.runs.kernel_setup import COUNT
from cniscope.collector.runs.scaling_detail import slope_ns_per_rule
from cniscope.core import grpcutil
from cniscope.lab.lab import Lab, LabSpec


async def scaling(address: str, lab: str, counts: list[int], repeat: int, backends: list[str]) -> runs_pb2.Run:
    async with grpcutil.insecure_channel(address) as ch:
        stub = runs_pb2_grpc.RunsStub(ch)
        req = runs_pb2.ServiceScalingRequest(label="bench", counts=counts, lab=lab, repeat=repeat, connects=200,
                                             backends=backends)
        final = None
        async for upd in stub.StartServiceScaling(req):
            if upd.WhichOneof("body") == "run":
                final = upd.run
        assert final is not None
        return final


def wait_nodes(address: str, n: int) -> None:
    from cniscope.client.grpc_collector import list_nodes

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if sum(1 for x in asyncio.run(list_nodes(address, deadline=2)) if x.status == 1) >= n:
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise SystemExit("agents did not connect")


def wait_figure(address: str, node: str, key: str, timeout: float = 60) -> None:
    from cniscope.client.grpc_collector import list_nodes

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(x.node == node and key in x.figures for x in asyncio.run(list_nodes(address, deadline=5))):
            return
        time.sleep(0.3)
    raise SystemExit(f"no {key} from {node}: the tracer did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="4,104,1000,5000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backends", default="iptables-nft,iptables-legacy,nft,ebpf")
    ap.add_argument("--tracer", action="store_true", help="tcpconnlat on node1's probe pod: in-kernel setup too")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    backends = [b for b in args.backends.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(LabSpec(name=f"bsr{__import__('os').getpid() % 1000}", nodes=3), state_root=Path(tmp) / "labs")
        try:
            lab.up()
            lab.start_cluster(db=Path(tmp) / "c.db", sample_interval=2.0,
                              tracers=("tcpconnlat",) if args.tracer else (), tracer_nodes=("node1",))
            wait_nodes(lab.local_collector, 3)
            if args.tracer:
                wait_figure(lab.local_collector, "node1", COUNT)
            t0 = time.perf_counter()
            run = asyncio.run(scaling(lab.local_collector, lab.spec.name, counts, args.repeat, backends))
            wall = time.perf_counter() - t0
        finally:
            lab.down()
    if run.status != runs_pb2.RUN_STATUS_DONE:
        raise SystemExit(f"run ended {run.status}: {run.error}")
    sc = json.loads(run.detail_json)["scaling"]
    print(f"service scaling, counts {counts}, repeat {args.repeat}, {wall:.0f} s wall")
    print("| backend | N | rules | load (slowest node) | setup floor µs | setup median µs | floor ratio to smallest N "
          "| setup mean µs | kernel mean µs (min–max) | kernel Δcount / probe connects |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b, d in sc.items():
        rows = d["rows"]
        base = rows[0]["setup_p50_min_us"]
        for r in rows:
            kernel = (f"{r['kernel_setup_mean_us']:.1f} ({r['kernel_setup_mean_min_us']:.1f}–"
                      f"{r['kernel_setup_mean_max_us']:.1f}) | {r['kernel_connects']} / {r['kernel_probe_connects']}"
                      if "kernel_setup_mean_us" in r else f"- | {r.get('kernel_note', '-')}")
            print(f"| {b} | {r['services']:,} | {r['rules']:,} | {r['sync_ms']:.0f} ms | {r['setup_p50_min_us']:.1f} "
                  f"| {r['setup_p50_us']:.1f} | {r['setup_p50_min_us'] / base:.2f} | {r['setup_mean_us']:.1f} "
                  f"| {kernel} |")
    for b, d in sc.items():
        kernel = d.get("slope_kernel_ns_per_rule")
        print(f"{b}: slope p50 {d['slope_p50_ns_per_rule']:.2f} ns/rule, mean {d['slope_mean_ns_per_rule']:.2f}"
              + (f", kernel mean {kernel:.2f}" if kernel is not None else ""))
        per_service = {k: slope_ns_per_rule([(float(r["services"]), float(r[k])) for r in d["rows"] if k in r])
                       for k in ("setup_p50_min_us", "setup_mean_us", "kernel_setup_mean_us")}
        print(f"{b}: slope per Service: " + ", ".join(f"{k.removesuffix('_us')} {v:.2f} ns" for k, v in
                                                      per_service.items() if v is not None))


if __name__ == "__main__":
    main()
