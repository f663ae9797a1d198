"""Pipeline benchmarks: collector ingest, 1,000 simulated agents, agent idle cost, retention size.

Run: .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--only NAME ...]
Each figure is printed with the baseline it is compared to (same machine, same run).
The collector runs as a real process pinned to CPU 0; load generators run on CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.collector import retention
from cniscope.collector.store import Store
from cniscope.core import grpcutil

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def realistic_batch(node: str, boot: str, seq: int, series: int = 20) -> agent_pb2.Batch:
    """~1.6 KB: the footprint and census figures an agent sends every interval."""
    now = time.time_ns()
    procs = ["cilium-agent", "aws-node", "kube-proxy", "cniscope-agent"]
    samples = []
    for i in range(series):
        samples.append(common_pb2.Sample(
            name=["cni_cpu_millicores", "cni_rss_bytes", "iptables_rules", "bpf_map_entries", "conntrack_entries"][i % 5],
            labels={"process": procs[i % 4], "table": f"t{i}"}, value=random.random() * 1e6, time_unix_nano=now))
    return agent_pb2.Batch(boot_id=boot, seq=seq, time_unix_nano=now, samples=samples, spool_depth=0)


def start_collector(db: Path, port: int, metrics_port: int = 0) -> subprocess.Popen[bytes]:
    argv = ["taskset", "-c", "0", PY, "-m", "cniscope.cli", "collector", "--listen", f"127.0.0.1:{port}",
            "--db", str(db), "--log-level", "warning"]
    if metrics_port:
        argv += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("collector did not start")


ECHO_SERVER = """
import asyncio, sys, grpc
from cniscope.api.v1 import agent_pb2, agent_pb2_grpc
from cniscope.core import grpcutil
class Echo(agent_pb2_grpc.AgentHubServicer):
    async def Connect(self, it, ctx):
        async for m in it:
            if m.WhichOneof("body") == "hello":
                yield agent_pb2.CollectorMessage(welcome=agent_pb2.Welcome())
            else:
                yield agent_pb2.CollectorMessage(ack=agent_pb2.Ack(boot_id=m.batch.boot_id, seq=m.batch.seq))
async def main():
    s = grpc.aio.server(options=grpcutil.server_options())
    agent_pb2_grpc.add_AgentHubServicer_to_server(Echo(), s)
    s.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await s.start()
    await s.wait_for_termination()
asyncio.run(main())
"""


def start_echo(port: int) -> subprocess.Popen[bytes]:
    """Baseline: a gRPC server that acks every batch and does nothing else (the floor of grpc.aio)."""
    proc = subprocess.Popen(["taskset", "-c", "0", PY, "-c", ECHO_SERVER, str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("echo server did not start")


def scrape(port: int) -> dict[str, float]:
    """The collector's own counters from its /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("cniscope_collector_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name.removesuffix("_total")] = float(value)
    return out


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class WireBatch:
    """Pre-encoded AgentMessage{batch}: only boot_id and seq change, so the load generator spends
    microseconds per batch and the collector, not the generator, is what gets measured."""

    def __init__(self, template: agent_pb2.Batch) -> None:
        rest = agent_pb2.Batch()
        rest.CopyFrom(template)
        rest.boot_id, rest.seq = "", 0
        self.rest = rest.SerializeToString()

    def encode(self, boot: str, seq: int) -> bytes:
        b = boot.encode()
        inner = b"\x0a" + _varint(len(b)) + b + b"\x10" + _varint(seq) + self.rest
        return b"\x12" + _varint(len(inner)) + inner


def raw_stub(channel: Any) -> Any:
    return channel.stream_stream("/cniscope.api.v1.AgentHub/Connect", request_serializer=lambda b: b,
                                 response_deserializer=agent_pb2.CollectorMessage.FromString)


class Stream:
    """One simulated agent: Hello, then batches; records the ack latency of each (acks are cumulative)."""

    def __init__(self, stub: Any, node: str) -> None:
        self.stub = stub
        self.node = node
        self.boot = os.urandom(8).hex()
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.acked = 0
        self.q: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.window = asyncio.Semaphore(64)
        self.welcomed = asyncio.Event()

    async def _gen(self) -> Any:
        while (m := await self.q.get()) is not None:
            yield m

    async def run_reader(self) -> None:
        call: Any = self.stub(self._gen())
        await self.q.put(agent_pb2.AgentMessage(hello=agent_pb2.Hello(
            node=self.node, boot_id=self.boot, host_ip="198.18.1.1",
            time_unix_nano=time.time_ns())).SerializeToString())
        async for msg in call:
            which = msg.WhichOneof("body")
            if which == "welcome":
                self.welcomed.set()
            elif which == "ack":
                now = time.perf_counter()
                for seq in [q for q in self.sent if q <= msg.ack.seq]:
                    self.latencies.append(now - self.sent.pop(seq))
                    self.acked += 1
                    self.window.release()

    async def send(self, seq: int, wire: bytes) -> None:
        await self.window.acquire()
        self.sent[seq] = time.perf_counter()
        await self.q.put(wire)


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


async def _ingest(port: int, streams: int, seconds: float) -> tuple[int, list[float]]:
    chans = [grpcutil.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    ss = [Stream(raw_stub(chans[i % 4]), f"load{i}") for i in range(streams)]
    readers = [asyncio.create_task(s.run_reader()) for s in ss]
    await asyncio.gather(*(s.welcomed.wait() for s in ss))
    wire = WireBatch(realistic_batch("x", "x", 1))
    stop_at = time.monotonic() + seconds

    async def pump(s: Stream) -> None:
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            await s.send(seq, wire.encode(s.boot, seq))

    t0 = time.monotonic()
    await asyncio.gather(*(pump(s) for s in ss))
    await asyncio.sleep(1.0)
    elapsed = time.monotonic() - t0
    for r in readers:
        r.cancel()
    for ch in chans:
        await ch.close()
    total = sum(s.acked for s in ss)
    return int(total / elapsed), [x for s in ss for x in s.latencies]


def bench_ingest(quick: bool) -> None:
    os.sched_setaffinity(0, {1})
    b = realistic_batch("node1", "boot", 1)
    print(f"== collector ingest (batch {b.ByteSize()} bytes, {len(b.samples)} samples)")
    with tempfile.TemporaryDirectory() as d:
        st = Store(Path(d) / "base.db")  # baseline: the store alone, no gRPC
        n = 3000 if quick else 20000
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            b.seq = i
            st.commit_batch("node1", b, time.time_ns())
        base = n / (time.perf_counter() - t0)
        st.close()
        eport = free_port()
        echo = start_echo(eport)
        try:
            ep = psutil.Process(echo.pid)
            c0, t0 = sum(ep.cpu_times()[:2]), time.monotonic()
            floor, _ = asyncio.run(_ingest(eport, 16, 5 if quick else 20))
            echo_cores = (sum(ep.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
        finally:
            stop(echo)
        port, mport = free_port(), free_port()
        proc = start_collector(Path(d) / "c.db", port, mport)
        try:
            p = psutil.Process(proc.pid)
            c0 = sum(p.cpu_times()[:2])
            t0 = time.monotonic()
            rate, lat = asyncio.run(_ingest(port, 16, 5 if quick else 20))
            cores = (sum(p.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
            m = scrape(mport)
        finally:
            stop(proc)
        rows = sqlite3.connect(Path(d) / "c.db").execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    print(f"store alone (commit_batch loop, same thread): {base:,.0f} batches/s; "
          f"no-op gRPC ack server (same load, one core): {floor:,.0f} batches/s")
    print(f"collector over gRPC, 16 streams, pinned to one core: {rate:,.0f} acked batches/s "
          f"({rate / floor:.2f}x the no-op server, {rate / base:.2f}x the bare store), collector CPU {cores:.2f} cores, ack p50 {_pct(lat, 50) * 1e3:.1f} ms "
          f"p99 {_pct(lat, 99) * 1e3:.1f} ms, rows {rows}")
    b = m.get("cniscope_collector_batches", 0.0)
    print(f"batches per store transaction {b / max(1.0, m.get('cniscope_collector_commits', 0.0)):.1f}, "
          f"per ack message {b / max(1.0, m.get('cniscope_collector_acks', 0.0)):.1f}; "
          f"CPU per batch: collector {cores / max(rate, 1) * 1e6:.0f} us, no-op server "
          f"{echo_cores / max(floor, 1) * 1e6:.0f} us; one core's worth at that cost: {rate / cores:,.0f} batches/s")


async def _fleet(port: int, agents: int, seconds: float) -> tuple[list[float], int, int]:
    # one connection per agent, as on a cluster: channels to one target otherwise share gRPC's global
    # subchannel pool, i.e. one HTTP/2 connection, and the collector admits 128 calls per connection
    opts = [*grpcutil.client_options(), ("grpc.use_local_subchannel_pool", 1)]
    chans = [grpcutil.insecure_channel(f"127.0.0.1:{port}", opts) for _ in range(agents)]
    ss = [Stream(raw_stub(chans[i]), f"sim{i:04d}") for i in range(agents)]
    readers = []
    for s in ss:  # connect gradually, like a rolling DaemonSet
        readers.append(asyncio.create_task(s.run_reader()))
        await asyncio.sleep(0.002)
    await asyncio.gather(*(s.welcomed.wait() for s in ss))
    wire = WireBatch(realistic_batch("x", "x", 1))
    sent = 0

    async def tick(s: Stream) -> None:
        nonlocal sent
        await asyncio.sleep(random.random())
        seq = 0
        next_t = time.monotonic()
        stop_at = next_t + seconds
        while next_t < stop_at:
            seq += 1
            await s.send(seq, wire.encode(s.boot, seq))
            sent += 1
            next_t += 1.0
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))

    await asyncio.gather(*(tick(s) for s in ss))
    await asyncio.sleep(2.0)
    for r in readers:
        r.cancel()
    for ch in chans:
        await ch.close()
    return [x for s in ss for x in s.latencies], sent, sum(s.acked for s in ss)


def bench_fleet(quick: bool) -> None:
    os.sched_setaffinity(0, {1})
    agents, seconds = (1000, 15) if quick else (1000, 60)
    print(f"== {agents} simulated agents at 1 batch/s for {seconds} s")
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        proc = start_collector(Path(d) / "c.db", port)
        try:
            lat, sent, acked = asyncio.run(_fleet(port, agents, seconds))
            rss = psutil.Process(proc.pid).memory_info().rss
        finally:
            stop(proc)
        con = sqlite3.connect(Path(d) / "c.db")
        rows, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT node || boot_id || seq) FROM batches").fetchone()
    print(f"sent {sent}, acked {acked}, stored {rows} ({distinct} distinct), lost {sent - rows}; ack latency "
          f"p50 {_pct(lat, 50) * 1e3:.1f} ms p99 {_pct(lat, 99) * 1e3:.1f} ms max {max(lat) * 1e3:.1f} ms; "
          f"collector RSS {rss / 2**20:.0f} MiB")


def bench_agent_idle(quick: bool) -> None:
    seconds = 60 if quick else 300
    print(f"== agent idle at default intervals for {seconds} s")
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        col = start_collector(Path(d) / "c.db", port)
        agent = subprocess.Popen([PY, "-m", "cniscope.cli", "agent", "--collector", f"127.0.0.1:{port}",
                                  "--node", "idle1", "--host-ip", "198.18.0.11", "--log-level", "warning"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = subprocess.Popen([PY, "-c", "import time\nwhile True: time.sleep(5)"])
        try:
            time.sleep(10)  # start-up (imports, first capability report) is not idle
            pa, pb = psutil.Process(agent.pid), psutil.Process(base.pid)
            a0, b0, t0 = sum(pa.cpu_times()[:2]), sum(pb.cpu_times()[:2]), time.monotonic()
            peak = 0
            while time.monotonic() - t0 < seconds:
                time.sleep(5)
                peak = max(peak, pa.memory_info().rss)
            wall = time.monotonic() - t0
            mc = 1000 * (sum(pa.cpu_times()[:2]) - a0) / wall
            bmc = 1000 * (sum(pb.cpu_times()[:2]) - b0) / wall
            brss = pb.memory_info().rss
        finally:
            for p in (agent, base):
                stop(p)
            stop(col)
    print(f"agent: {mc:.2f} millicores average, peak RSS {peak / 2**20:.1f} MiB "
          f"(bare sleeping python: {bmc:.2f} m, {brss / 2**20:.1f} MiB); "
          f"vs Cilium agent 4-6 m / 81-129 MiB: {mc / 4:.2f}x and {peak / 2**20 / 81:.2f}x of the low end")


class SeriesValues:
    """Values like an agent's (deterministic): CPU millicores with 3 decimals, RSS moving by pages,
    a constant rule count, map entries and conntrack entries drifting by small integers; or, with
    ``random_doubles``, uniformly random doubles (the worst case for any encoding)."""

    def __init__(self, series: int, seed: int, random_doubles: bool = False) -> None:
        self.rng = random.Random(seed)
        self.random_doubles = random_doubles
        self.state = [[4.0, 150e6, 1234.0, 5000.0, 20000.0][i % 5] for i in range(series)]

    def next(self) -> list[float]:
        rng, out = self.rng, []
        for i, x in enumerate(self.state):
            kind = i % 5
            if self.random_doubles:
                out.append(rng.random() * 1e6)
                continue
            if kind == 0:
                out.append(round(max(0.0, x + rng.gauss(0, 1.5)), 3))
                continue
            if kind == 1:
                x += 4096 * rng.choice((0, 0, 0, 1, -1))
            elif kind == 3:
                x += rng.randint(-3, 3)
            elif kind == 4:
                x += rng.randint(-50, 50)
            self.state[i] = x
            out.append(float(x))
        return out


def _retention_db(path: Path, nodes: int, hours: float, series: int, random_doubles: bool) -> Store:
    st = Store(path)
    t0 = time.time_ns() - int(hours * 3600) * 10**9
    for n in range(nodes):
        node = f"node{n:03d}"
        st.record_hello(agent_pb2.Hello(node=node, boot_id="b"), t0)
        vals = SeriesValues(series, n, random_doubles)
        items = []
        for sec in range(int(hours * 3600)):
            ts = t0 + sec * 10**9
            b = realistic_batch(node, "b", sec + 1, series)
            b.time_unix_nano = ts
            for smp, v in zip(b.samples, vals.next(), strict=True):
                smp.time_unix_nano = ts
                smp.value = v
            items.append((node, b, ts))
        for i in range(0, len(items), 1000):
            st.commit_batches(items[i:i + 1000])
    return st


def _db_size(st: Store) -> int:
    st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.conn.execute("VACUUM")
    pc = st.conn.execute("PRAGMA page_count").fetchone()[0]
    ps = st.conn.execute("PRAGMA page_size").fetchone()[0]
    fl = st.conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pc - fl) * ps)


def bench_retention(quick: bool) -> None:
    nodes, hours, series = (10, 1, 20) if quick else (20, 2, 20)
    print(f"== retention: DB size per node-hour at 1 Hz x {series} series, extrapolated to 100 nodes x 1 week")
    with tempfile.TemporaryDirectory() as d:
        st = _retention_db(Path(d) / "r.db", nodes, hours, series, random_doubles=False)
        samples = nodes * hours * 3600 * series
        head = _db_size(st)
        t = time.perf_counter()
        rep = st.compact(time.time_ns())
        compact_s = time.perf_counter() - t
        raw = _db_size(st)
        node_hours = nodes * hours
        per_raw_node_hour = raw / node_hours
        for n in range(nodes):
            retention.prune_node(st.conn, f"node{n:03d}", time.time_ns() + 120 * 10**9, st.watermarks)
        agg = _db_size(st)
        per_agg_node_hour = agg / node_hours
        st.close()
        worst_nodes = 2 if quick else 4
        st = _retention_db(Path(d) / "w.db", worst_nodes, hours, series, random_doubles=True)
        st.compact(time.time_ns())
        worst = _db_size(st) / (worst_nodes * hours * 3600 * series)
        st.close()
    print(f"raw samples: {head / samples:.1f} B/sample as received (one protobuf blob per batch), "
          f"{raw / samples:.2f} B/sample compacted ({head / raw:.0f}x smaller; Prometheus TSDB: 1-2 B/sample); "
          f"random doubles, the worst case: {worst:.2f} B/sample")
    print(f"compaction: {compact_s / samples * 1e6:.2f} us/sample on the store thread "
          f"({rep.chunks} chunks of {rep.samples / max(1, rep.chunks):,.0f} samples)")
    print(f"raw: {per_raw_node_hour / 2**20:.3f} MiB per node-hour; per-minute aggregates: "
          f"{per_agg_node_hour / 2**20:.3f} MiB per node-hour")
    week_raw = per_raw_node_hour * 100 * 24 * 7
    with_ret = per_raw_node_hour * 100 * 24 + per_agg_node_hour * 100 * 24 * 6
    print(f"100 nodes x 1 week: all raw {week_raw / 2**30:.2f} GiB; 24 h raw + 6 days aggregates "
          f"{with_ret / 2**30:.2f} GiB; steady state with 30-day aggregates "
          f"{(per_raw_node_hour * 100 * 24 + per_agg_node_hour * 100 * 24 * 30) / 2**30:.2f} GiB")


def bench_downtime(quick: bool) -> None:
    """The lab test with the collector down for 5 minutes (CI holds it down for 60 s)."""
    seconds = 60 if quick else 300
    print(f"== collector down {seconds} s while 3 lab agents produce 1 batch/s")
    if os.geteuid() != 0:
        print("skipped: the lab needs root")
        return
    root = Path(__file__).resolve().parents[1]
    t0 = time.monotonic()
    r = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--timeout={seconds + 240:.0f}",
                        "tests/e2e/test_pipeline_lab.py::test_collector_down_while_agents_produce_loses_nothing"],
                       cwd=root, env={**os.environ, "CNISCOPE_TEST_DOWN_SECONDS": str(seconds)},
                       capture_output=True, text=True)
    tail = r.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"{'passed' if r.returncode == 0 else 'FAILED'} in {time.monotonic() - t0:.0f} s: {tail[0]}")


BENCHES = {"ingest": bench_ingest, "fleet": bench_fleet, "retention": bench_retention, "idle": bench_agent_idle,
           "downtime": bench_downtime}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs (figures are noisier)")
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    ns = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Linux {os.uname().release}, Python {sys.version.split()[0]}")
    for name, fn in BENCHES.items():
        if ns.only is None or name in ns.only:
            fn(ns.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
