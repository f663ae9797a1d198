"""A watcher's backlog is bounded in bytes (issue 13, finding 6): once the encoded events waiting for
it would pass its cap it is cut off, its backlog dropped, and the reason names the cap; a batch's
samples are not even encoded for a watcher already over its cap. Events are encoded once, exactly as
protobuf would encode them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2
from cniscope.collector import watchers
from cniscope.collector.state import ClusterState, Session
from cniscope.collector.watchers import EVENT_OVERHEAD, Watcher, encode_event, samples_event

T0 = 1_700_000_000 * 10**9


def _samples(n: int, series: int = 0) -> list[common_pb2.Sample]:
    """``n`` samples of ``series`` series (0: each its own)."""
    return [common_pb2.Sample(name=f"series_{i % (series or n)}", labels={"i": str(i % (series or n)), "k": "v"},
                              value=i / 3, time_unix_nano=T0 + i) for i in range(n)]


def _log(size: int) -> bytes:
    """An encoded log event of exactly ``size`` bytes."""
    msg = "x" * size
    while len(ev := cluster_pb2.ClusterEvent(log=common_pb2.LogEvent(message=msg)).SerializeToString()) > size:
        msg = msg[:-(len(ev) - size)]
    assert len(ev) == size
    return ev


def test_events_are_encoded_as_protobuf_would() -> None:
    samples = _samples(300)
    want = cluster_pb2.ClusterEvent(samples=cluster_pb2.NodeSamples(node="node-ü", samples=samples))
    got = samples_event("node-ü", samples)
    assert cluster_pb2.ClusterEvent.FromString(got) == want
    assert len(got) == want.ByteSize()
    assert samples_event("n", []) == cluster_pb2.ClusterEvent(
        samples=cluster_pb2.NodeSamples(node="n")).SerializeToString()
    st = cluster_pb2.NodeState(node="n1", figures={f"f{i}": float(i) for i in range(500)}, last_seq=7)
    got = encode_event("node", st)
    assert cluster_pb2.ClusterEvent.FromString(got) == cluster_pb2.ClusterEvent(node=st)
    assert len(got) == cluster_pb2.ClusterEvent(node=st).ByteSize()


def test_a_watcher_is_cut_off_once_its_queued_bytes_would_pass_the_cap() -> None:
    cap = 10_000
    w = Watcher(max_bytes=cap)
    event = _log(1_800)
    per = len(event) + EVENT_OVERHEAD                 # 2,000 bytes each
    for n in range(1, cap // per + 1):                # five fit exactly: 10,000 bytes queued
        assert w.offer(event)
        assert w.queued == n * per
    assert w.queued == cap
    assert not w.cut
    assert not w.offer(event)                         # the sixth would make 12,000
    reason: str = w.cut
    assert reason == ("this watcher fell 12,000 bytes behind (cap 10,000 bytes of unread events): "
                     "watch again for a fresh snapshot")
    assert (w.queued, len(w)) == (0, 0)               # its backlog is dropped at once
    assert asyncio.run(w.next()) is None              # and its call ends


def test_a_watcher_that_reads_is_never_cut_off() -> None:
    async def main() -> None:
        w = Watcher(max_bytes=10_000)
        event = _log(1_800)
        for _ in range(100):
            assert w.offer(event)
            assert w.offer(event)
            assert await w.next() == event
            assert await w.next() == event
        assert (w.queued, w.cut) == (0, "")

    asyncio.run(main())


def test_samples_are_not_encoded_for_a_watcher_already_over_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    state = ClusterState()
    state.connect(agent_pb2.Hello(node="n1", boot_id="b1", host_ip="198.18.0.11"), Session("n1", "b1"), T0)
    slow, node_only = state.subscribe(include_samples=True), state.subscribe(include_samples=False)
    built: list[int] = []
    real = watchers.samples_event

    def counted(node: str, samples: Sequence[common_pb2.Sample]) -> bytes:
        built.append(len(samples))
        return real(node, samples)

    monkeypatch.setattr(watchers, "samples_event", counted)
    big = agent_pb2.Batch(boot_id="b1", seq=1, time_unix_nano=T0, samples=_samples(2_000, series=3))
    slow.max_bytes = cap = 3 * big.ByteSize() // 2  # room for one batch's samples, not two
    state.on_batch("n1", big, T0 + 1)                 # the first fits: encoded and queued
    assert built == [2_000]
    assert slow.queued > big.ByteSize()
    big.seq = 2
    state.on_batch("n1", big, T0 + 2)                 # the second would not: cut off, nothing encoded
    assert built == [2_000]
    assert f"(cap {cap:,} bytes of unread events)" in slow.cut
    assert slow not in state.watchers
    assert (slow.queued, len(slow)) == (0, 0)
    assert node_only in state.watchers                # the node events still reach the other
    assert not node_only.cut
    assert len(node_only) == 2
