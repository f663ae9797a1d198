"""The latest-value state (node figures, latest sample per series, clock skew) is applied off the ack
path: batches wait until someone reads, watches or the once-a-second sweep runs. Whatever reads it
sees every batch received so far, and watchers still get each batch as it comes."""

from __future__ import annotations

import asyncio

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2
from cniscope.collector.state import PENDING_MAX, ClusterState, Session

T0 = 1_700_000_000 * 10**9


def _state() -> ClusterState:
    st = ClusterState()
    st.connect(agent_pb2.Hello(node="n1", boot_id="b1", host_ip="198.18.0.11"), Session("n1", "b1"), T0)
    return st


def _batch(seq: int, **values: float) -> agent_pb2.Batch:
    return agent_pb2.Batch(boot_id="b1", seq=seq, time_unix_nano=T0 + seq, samples=[
        common_pb2.Sample(name=k, labels={"process": "cilium-agent"}, value=v) for k, v in values.items()])


def test_reads_see_every_batch_received() -> None:
    st = _state()
    st.on_batch("n1", _batch(1, cni_cpu_millicores=5.0, nat_rules=99.0), T0 + 1)
    st.on_batch("n1", _batch(2, cni_cpu_millicores=7.0), T0 + 2)
    node = st.nodes["n1"]
    assert node.last_seq == 2  # bookkeeping is immediate
    st.settle()
    figs = dict(node.figures)
    # the newest batch defines cpu; the older one still contributes the series the newest lacks
    assert figs == {"cni_cpu_millicores{process=cilium-agent}": 7.0, "nat_rules{process=cilium-agent}": 99.0}
    assert st.latest["n1"]["nat_rules{process=cilium-agent}"].value == 99.0


def test_pending_batches_are_bounded_and_the_sweep_applies_them() -> None:
    st = _state()
    for seq in range(1, PENDING_MAX):
        st.on_batch("n1", _batch(seq, cni_cpu_millicores=float(seq)), T0 + seq)
    assert "cni_cpu_millicores{process=cilium-agent}" not in st.nodes["n1"].figures
    st.on_batch("n1", _batch(PENDING_MAX, cni_cpu_millicores=1000.0), T0)  # the bound: applied at once
    assert st.nodes["n1"].figures["cni_cpu_millicores{process=cilium-agent}"] == 1000.0
    st.on_batch("n1", _batch(PENDING_MAX + 1, cni_cpu_millicores=2000.0), T0)
    st.sweep(T0)
    assert st.nodes["n1"].figures["cni_cpu_millicores{process=cilium-agent}"] == 2000.0


def test_a_skewed_clock_is_flagged_when_applied() -> None:
    st = _state()
    st.on_batch("n1", _batch(1, agent_clock_offset_ms=180.0), T0)
    st.settle("n1")
    assert st.nodes["n1"].clock_skewed
    assert st.nodes["n1"].clock_skew_ms == 180.0
    assert any("clock off by +180.0 ms" in e.message for e in st.recent_logs)


def test_a_watcher_gets_every_batch_as_it_comes() -> None:
    async def main() -> None:
        st = _state()
        w = st.subscribe(include_samples=True)
        for seq in (1, 2, 3):
            st.on_batch("n1", _batch(seq, cni_cpu_millicores=float(seq)), T0 + seq)
        got = []
        while len(w):
            data = await w.next()
            assert data is not None
            ev = cluster_pb2.ClusterEvent.FromString(data)
            if ev.WhichOneof("body") == "samples":
                got.append(ev.samples.samples[0].value)
        assert got == [1.0, 2.0, 3.0]

    asyncio.run(main())
