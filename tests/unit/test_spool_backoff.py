"""The agent's spool bound and reconnect schedule."""

from __future__ import annotations

import random

import pytest

from cniscope.agent.backoff import Backoff
from cniscope.agent.spool import Spool
from cniscope.api.v1 import agent_pb2, common_pb2


def _batch(seq: int, n: int = 1) -> agent_pb2.Batch:
    return agent_pb2.Batch(boot_id="b", seq=seq, samples=[common_pb2.Sample(name="x", value=1.0)] * n)


def test_spool_drops_oldest_and_counts() -> None:
    sp = Spool(max_batches=5)
    for s in range(1, 13):
        sp.add(_batch(s))
    assert sp.depth == 5
    assert sp.dropped == 7
    assert [b.seq for b in sp.pending()] == [8, 9, 10, 11, 12]


def test_spool_ack_is_cumulative() -> None:
    sp = Spool()
    for s in range(1, 6):
        sp.add(_batch(s))
    assert sp.ack(3) == 3
    assert [b.seq for b in sp.pending()] == [4, 5]
    assert sp.ack(2) == 0
    assert sp.acked_seq == 3


def test_spool_byte_bound() -> None:
    one = _batch(1, 50).ByteSize()
    sp = Spool(max_batches=1000, max_bytes=one * 3)
    for s in range(1, 11):
        sp.add(_batch(s, 50))
    assert sp.depth == 3
    assert sp.dropped == 7
    assert sp.bytes <= one * 3


def test_backoff_schedule_and_jitter() -> None:
    b = Backoff(initial=1.0, factor=1.6, cap=60.0, jitter=0.2, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(12)]
    for i, d in enumerate(delays):
        base = min(60.0, 1.6**i)
        assert base * 0.8 <= d <= base * 1.2
    assert max(delays) <= 72.0
    b.reset()
    assert b.next_delay() == pytest.approx(1.0, rel=0.2)


def test_two_agents_do_not_retry_in_lockstep() -> None:
    a, b = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [round(a.next_delay(), 3) for _ in range(5)] != [round(b.next_delay(), 3) for _ in range(5)]
