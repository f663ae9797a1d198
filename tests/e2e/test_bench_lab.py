"""``cniscope bench`` against a real 3-node lab: stored medians are the medians of the stored
repetitions; a 2 ms delay shows up as ~2 ms worse RTT; on runs with fixed figures the comparison
calls overlapping runs within noise and a 2 ms slower one worse, and ``--fail-if`` exits non-zero
exactly when crossed; the HTML comparison renders in
headless Chromium with every run label and metric; service scaling loads 8 + 10·N NAT rules on every
node, connect setup grows with N for iptables-nft and not for the nft verdict map; Ctrl-C leaves no
probe process and no rule behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from probe_helpers import running_cluster  # type: ignore[import-not-found]

from cniscope.core import stats
from cniscope.lab.lab import Lab
from cniscope.lab.lab_services import count_rules
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns]
CNISCOPE = [sys.executable, "-m", "cniscope.cli"]
PROBE_TOOLS = {"ping", "iperf3", "nsenter"}


@pytest.fixture(scope="module")
def bench_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    root = tmp_path_factory.mktemp("bench")
    with running_cluster(root, nodes=3) as lab:
        yield lab, root / "c.db"


def bench(lab: Lab, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CNISCOPE_COLLECTOR": lab.local_collector}
    r = subprocess.run([*CNISCOPE, "bench", *args], capture_output=True, text=True, env=env, timeout=timeout,
                       check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def run(lab: Lab, label: str, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(bench(lab, "run", "--label", label, "--suite", "quick", "-o", "json", *args).stdout)
    assert out["status"] == "RUN_STATUS_DONE", out
    return out


def compare_json(lab: Lab, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(bench(lab, "compare", "-o", "json", *args).stdout)
    return out


def row(cmp: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(r for t in cmp["tables"] for r in t["rows"] if r["metric"] == metric)


def stored_run(db: Path, label: str, rtt_p50_us: list[float]) -> str:
    """A finished run whose repetitions have the given RTT p50s, written into the collector's store
    the way a run stores itself: the comparison then decides on figures this test fixed."""
    from cniscope.api.v1 import runs_pb2
    from cniscope.collector.runs import run_store
    from cniscope.core import benchmetrics as bm

    now = time.time_ns()
    run = runs_pb2.Run(run_id=f"fixed{now % 10**9:09d}", label=label, kind="suite", suite="quick",
                       repeat=len(rtt_p50_us), status=runs_pb2.RUN_STATUS_DONE, started_unix_nano=now,
                       finished_unix_nano=now, fingerprint={"environment": "fixed figures"}, pairs=["node1→node2"])
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        run_store.insert_run(conn, run)
        run_store.add_values(conn, run.run_id, [("rtt.p50", i, "node1→node2", v, "") for i, v in enumerate(rtt_p50_us)])
        run_store.finish(conn, run, {"rtt.p50": bm.aggregate(rtt_p50_us)})
    finally:
        conn.close()
    return run.run_id


def lab_probe_processes(lab: Lab, older_than: float) -> list[str]:
    """Probe tools (ping, iperf3, nsenter) inside any of the lab's namespaces that have been running
    for more than ``older_than`` seconds. The agents' own light mesh pings live about a second, so
    anything older than a few seconds after a run has stopped is a leftover."""
    inodes = {os.stat(f"/run/netns/{ns}").st_ino for ns in lab.namespaces() if os.path.exists(f"/run/netns/{ns}")}
    hz = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm not in PROBE_TOOLS or os.stat(f"/proc/{pid}/ns/net").st_ino not in inodes:
                continue
            start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / hz
        except (OSError, ValueError, IndexError):
            continue
        if uptime - start > older_than:
            found.append(f"{pid} {comm} ({uptime - start:.1f}s)")
    return found


def test_repeat3_medians_noise_delay_fail_if_and_html(bench_lab: tuple[Lab, Path], tmp_path: Path) -> None:
    from cniscope.lab import impair
    from cniscope.lab.impair_plan import Impairment

    lab, db = bench_lab
    a = run(lab, "A: lab baseline", "--repeat", "3", "--only", "rtt,connect,census")
    assert a["fingerprint"]["environment"] == "lab: netns, iptables-nft"
    assert a["fingerprint"]["nodes"] == "3"
    assert a["pairs"] == ["node1→node2"]

    # every stored figure is the median (min, max) of the repetitions stored beside it
    conn = sqlite3.connect(db)
    try:
        stored: dict[str, list[float]] = {}
        for m, v in conn.execute("SELECT metric, value FROM run_values WHERE run_id=?", (a["run_id"],)):
            stored.setdefault(m, []).append(v)
        figs = {m: (med, lo, hi, n) for m, med, lo, hi, n in conn.execute(
            "SELECT metric, median, min, max, n FROM run_figures WHERE run_id=?", (a["run_id"],))}
    finally:
        conn.close()
    assert len(stored["rtt.p50"]) == 3
    assert len(stored["connect.mean"]) == 3
    for m, vs in stored.items():
        assert figs[m] == (stats.median(vs), min(vs), max(vs), len(vs)), m
        assert a["figures"][m]["median"] == stats.median(vs)
    assert stored["nat.rules"] == [0.0]  # no Services loaded: the census counted an empty nat table

    # ground truth: a 2 ms delay on node2's egress lies under every reply of the delayed run
    b = run(lab, "B: lab again", "--repeat", "3", "--only", "rtt")
    impair.apply(lab, "node2", Impairment(delay_us=2000, max_seconds=120))
    try:
        c = run(lab, "C: node2 +2ms", "--repeat", "3", "--only", "rtt")
    finally:
        impair.clear(lab, "node2")
    b_p50, c_p50 = b["figures"]["rtt.p50"], c["figures"]["rtt.p50"]
    assert c_p50["min"] >= 1900, c_p50  # every repetition waited out the delay line (good to ~0.1 ms)
    assert 1500 <= c_p50["min"] - b_p50["min"] <= 3500, (b_p50, c_p50)  # ~2 ms worse, best against best

    # the comparison's verdicts on figures fixed here (a live pair of runs on a busy host may differ
    # by more than their own spread): ranges that overlap are noise, +2 ms on 100 µs is worse
    base = stored_run(db, "fixed: 100 µs", [95.0, 100.0, 105.0])
    again = stored_run(db, "fixed: 102 µs", [97.0, 102.0, 108.0])
    slower = stored_run(db, "fixed: 2100 µs", [2050.0, 2100.0, 2200.0])
    same = row(compare_json(lab, base, again), "rtt.p50")
    assert same["deltas"][1]["verdict"] == "within noise", same
    worse = row(compare_json(lab, base, slower), "rtt.p50")
    d = worse["deltas"][1]
    assert (d["verdict"], d["abs"], d["pct"]) == ("worse", 2000.0, 2000.0), worse

    # --fail-if: exit 3 exactly when crossed (+2000 % here), naming the metric
    crossed = bench(lab, "compare", base, slower, "--fail-if", "rtt.p50 > +1995%", check=False)
    assert crossed.returncode == 3, crossed.stderr
    assert "rtt.p50" in crossed.stderr
    held = bench(lab, "compare", base, slower, "--fail-if", "rtt.p50 > +2005%", check=False)
    assert held.returncode == 0, held.stderr
    bad = bench(lab, "compare", base, "--fail-if", "rtt.p50 >> 3", check=False)
    assert bad.returncode not in (0, 3)

    listed = bench(lab, "list").stdout
    for label in ("A: lab baseline", "B: lab again", "C: node2 +2ms"):
        assert label in listed
    assert "C: node2 +2ms" in bench(lab, "show", "C: node2 +2ms").stdout

    page = tmp_path / "cmp.html"
    bench(lab, "compare", a["run_id"], b["run_id"], c["run_id"], "-o", "html", "--out-file", str(page))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "chromium is installed by scripts/host-setup.sh"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=90, check=True).stdout
    for text in ("A: lab baseline", "B: lab again", "C: node2 +2ms", "RTT p50", "RTT p99", "connect setup mean",
                 "iptables NAT rules"):
        assert text in dom, text
    assert dom.count("<svg") >= 4


def test_service_scaling_iptables_nft_grows_verdict_map_flat(bench_lab: tuple[Lab, Path]) -> None:
    lab, _ = bench_lab
    r = bench(lab, "services", "--counts", "4,104,1000", "--backend", "iptables-nft,nft", "--repeat", "5",
              "--connects", "200", "-o", "json")
    sc = json.loads(r.stdout)["scaling"]
    ipt = {row["services"]: row for row in sc["iptables-nft"]["rows"]}
    nft = {row["services"]: row for row in sc["nft"]["rows"]}
    assert [ipt[n]["rules"] for n in (4, 104, 1000)] == [48, 1048, 10008]
    for n in (4, 104, 1000):
        assert set(ipt[n]["rules_per_node"].values()) == {ipt[n]["rules"]}  # every node holds the ruleset
        assert "errors" not in ipt[n]
        assert "errors" not in nft[n]
    # Load only ever adds latency, so the floors (the best repetition's median setup) carry the
    # signal on a busy 2-core host. A new flow walks KUBE-SERVICES on the node it leaves and on the
    # endpoint's node, so with iptables every connection gets slower as N grows (about +26 µs at
    # 1,000 Services here; the floors move by up to ~8 µs between steps with nothing changed); the
    # verdict map is a hash lookup.
    ipt_setup = ipt[1000]["setup_p50_min_us"] - ipt[4]["setup_p50_min_us"]
    nft_setup = nft[1000]["setup_p50_min_us"] - nft[4]["setup_p50_min_us"]
    assert ipt_setup > 10, ipt
    assert ipt[1000]["setup_p50_us"] > ipt[4]["setup_p50_us"], ipt
    assert nft_setup < 0.5 * ipt_setup, (nft, ipt_setup)
    for node in lab.nodes():  # the run removed what it loaded
        assert count_rules(node.netns, "iptables-nft") == 0


def wait_figure(lab: Lab, node: str, key: str, timeout: float) -> None:
    from cniscope.client.grpc_collector import list_nodes

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(n.node == node and key in n.figures for n in asyncio.run(list_nodes(lab.local_collector, deadline=5))):
            return
        time.sleep(0.3)
    log = Path(lab.status()["state_dir"]) / "logs" / f"agent-{node}.log"
    raise AssertionError(f"no {key} from {node} within {timeout:.0f}s\n{log.read_text()[-2000:]}")


@pytest.mark.bcc
def test_service_scaling_kernel_setup_counts_the_probes_connects(tmp_path: Path) -> None:
    """node1's agent runs tcpconnlat on its probe pod's namespace: for every step the tracer's Δcount
    is exactly the probe's successful connects (the mesh only pings, so nothing else connects from
    there), and its mean lies inside the userspace mean: each SYN_SENT → ESTABLISHED interval sits
    inside the connect() call the probe timed. The lab has no kube-proxy, and says so."""
    from cniscope.collector.runs.kernel_setup import COUNT

    with running_cluster(tmp_path, nodes=3, tracers=("tcpconnlat",), tracer_nodes=("node1",)) as lab:
        wait_figure(lab, "node1", COUNT, timeout=60)
        r = bench(lab, "services", "--counts", "4,104", "--backend", "iptables-nft", "--repeat", "1",
                  "--connects", "50", "-o", "json")
        md = bench(lab, "show", "services 4,104", "-o", "markdown").stdout
    rows = {row["services"]: row for row in json.loads(r.stdout)["scaling"]["iptables-nft"]["rows"]}
    assert sorted(rows) == [4, 104]
    for n, row in rows.items():
        assert "kernel_note" not in row, row
        assert row["kernel_connects"] == row["kernel_probe_connects"] == 50, row  # every connect succeeded
        assert 0 < row["kernel_setup_mean_us"] <= row["setup_mean_us"], row
        assert row["kernel_setup_mean_us"] > row["setup_mean_us"] / 20, row
        assert row["kernel_first_mean_us"] > 0, row
        assert row["proxy_note"].startswith("does not apply"), row
        assert "proxy_sync_ms" not in row
        assert f"{row['kernel_setup_mean_us']:.1f} µs ×50 |" in md, (n, md)
    assert "kube-proxy sync (every N): does not apply" in md


def lab_tools(lab: Lab, name: str) -> list[str]:
    return [p for p in lab_probe_processes(lab, older_than=0.0) if p.split()[1] == name]


def age(process: str) -> float:
    """Seconds a process listed by ``lab_probe_processes`` ("PID COMM (AGEs)") has been running."""
    return float(process.rsplit("(", 1)[1].rstrip("s)"))


def test_ctrl_c_leaves_nothing_running(bench_lab: tuple[Lab, Path]) -> None:
    lab, db = bench_lab
    env = {**os.environ, "CNISCOPE_COLLECTOR": lab.local_collector}

    # a 10 s iperf3 test in flight: Ctrl-C cancels it on the agent instead of waiting for it
    proc = subprocess.Popen([*CNISCOPE, "bench", "run", "--label", "interrupted", "--suite", "standard",
                             "--only", "tcp", "--repeat", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not lab_tools(lab, "iperf3"):
            time.sleep(0.2)
        assert lab_tools(lab, "iperf3"), "the tcp probe never started"
        time.sleep(1.0)  # the test is well under way
        t0 = time.monotonic()
        ran_for = min(age(p) for p in lab_tools(lab, "iperf3"))  # the youngest: the client
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "stopping the run" in err
    assert ran_for + stopped_after < 10.0, (ran_for, stopped_after)  # before the 10 s test could have ended
    wait_for(lambda: lab_tools(lab, "iperf3") == [], 5, "no iperf3 left in the lab")
    assert lab_probe_processes(lab, older_than=3.0) == []
    c = sqlite3.connect(db)
    try:
        errors = [e for (e,) in c.execute("SELECT error FROM probe_results WHERE probe_id LIKE "
                                          "(SELECT run_id FROM runs WHERE label='interrupted') || '.%'")]
    finally:
        c.close()
    assert errors == ["probe cancelled"], errors

    # service scaling interrupted while its rules are loaded: every node is clean afterwards
    proc = subprocess.Popen([*CNISCOPE, "bench", "services", "--counts", "4,104,1000,2000", "--backend",
                             "iptables-legacy", "--repeat", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and count_rules(lab.nodes()[0].netns, "iptables-legacy") == 0:
            time.sleep(0.3)
        assert count_rules(lab.nodes()[0].netns, "iptables-legacy") > 0, "no rules were ever loaded"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    wait_for(lambda: lab_probe_processes(lab, older_than=3.0) == [], 5, "no probe process left in the lab")
    for node in lab.nodes():
        assert count_rules(node.netns, "iptables-legacy") == 0
    c = sqlite3.connect(db)
    try:
        statuses = [s for (s,) in c.execute("SELECT status FROM runs WHERE label IN ('interrupted', "
                                            "'services 4,104,1000,2000')")]
    finally:
        c.close()
    assert statuses == [3, 3]  # RUN_STATUS_CANCELLED


def test_cni_footprint_sampled_during_the_run(tmp_path: Path) -> None:
    """A process named like one of the CNI's (hubble-relay: sampled as CNI footprint, but not taken for a
    CNI by the fingerprint, so other labs on the machine keep theirs) runs on the machine; the run's
    CNI memory figure is the RSS of the CNI-named processes, which the test reads from /proc beside
    the run (other tests on the machine may run CNI-named processes too). The agents sample every
    0.25 s, so each repetition's window (20 pings 20 ms apart) holds samples of both nodes, and the
    run starts only once both report the process's CPU rate (which needs a previous reading) and RSS."""
    from cniscope.client.grpc_collector import list_nodes

    fake = tmp_path / "hubble-relay"
    shutil.copy("/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "120"])
    seen_kib: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            seen_kib.append(cni_rss_kib())

    watcher = threading.Thread(target=watch)
    try:
        with running_cluster(tmp_path, nodes=2, sample_interval=0.25) as lab:
            def sampled() -> bool:
                nodes = asyncio.run(list_nodes(lab.local_collector, deadline=5))
                return len(nodes) == 2 and all(
                    any(k.startswith(name + "{") and "hubble-relay" in k for k in n.figures)
                    for n in nodes for name in ("cni_cpu_millicores", "cni_rss_bytes"))

            wait_for(sampled, 30, "both agents to report the fake CNI process's CPU and RSS")
            seen_kib.append(cni_rss_kib())
            watcher.start()
            try:
                out = run(lab, "with a CNI agent", "--repeat", "3", "--only", "rtt,footprint")
            finally:
                done.set()
                watcher.join()
    finally:
        proc.kill()
        proc.wait()
    assert "footprint" not in {s["item"] for s in out["skipped"]}, out["skipped"]
    mem = out["figures"]["cni.mem_mib"]["median"]
    assert min(seen_kib) / 1024 * 0.5 <= mem <= max(seen_kib) / 1024 * 1.5, (mem, min(seen_kib), max(seen_kib))
    assert out["figures"]["cni.cpu_m"]["median"] < 50  # sleeping processes


def cni_rss_kib() -> int:
    """The RSS of every process on the machine named like a CNI component (its comm, or its argv[0]'s
    base name), as /proc/PID/status shows it."""
    from cniscope.agent.samplers.cni_footprint import CNI_PROCESSES

    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            if comm not in {n[:15] for n in CNI_PROCESSES} and argv0.rsplit("/", 1)[-1] not in CNI_PROCESSES:
                continue
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    return total
