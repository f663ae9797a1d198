"""The on-disk spool: what was not acknowledged survives a restart, nothing acknowledged comes back."""

from __future__ import annotations

from pathlib import Path

from cniscope.agent.spool import Spool
from cniscope.api.v1 import agent_pb2, common_pb2


def _batch(boot: str, seq: int, n: int = 3) -> agent_pb2.Batch:
    return agent_pb2.Batch(boot_id=boot, seq=seq, time_unix_nano=seq,
                           samples=[common_pb2.Sample(name="x", value=float(seq))] * n)


def test_unacked_batches_survive_a_restart_and_acked_ones_do_not(tmp_path: Path) -> None:
    path = tmp_path / "spool.seg"
    sp = Spool(path=path, boot_id="old")
    for s in range(1, 11):
        sp.add(_batch("old", s))
    sp.ack(4)
    del sp  # no close(): a SIGKILLed agent never closes anything
    again = Spool(path=path, boot_id="new")
    assert again.recovered == 6
    assert [(b.boot_id, b.seq) for b in again.pending()] == [("old", s) for s in range(5, 11)]
    assert again.other_boots() == ["old"]
    again.add(_batch("new", 1))
    assert again.acked_seq == 0  # the live boot starts from nothing
    assert again.ack(7, "old") == 3
    assert again.ack(1) == 1
    third = Spool(path=path, boot_id="third")
    assert [(b.boot_id, b.seq) for b in third.pending()] == [("old", 8), ("old", 9), ("old", 10)]


def test_a_torn_tail_is_ignored_and_what_came_before_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "spool.seg"
    sp = Spool(path=path, boot_id="b")
    for s in range(1, 4):
        sp.add(_batch("b", s))
    intact = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b"\x50\x00\x00\x00\x41partial")  # a record whose payload was cut short
    again = Spool(path=path, boot_id="c")
    assert [b.seq for b in again.pending()] == [1, 2, 3]
    assert path.stat().st_size == intact  # rewritten without the torn record


def test_compaction_keeps_the_file_bounded(tmp_path: Path) -> None:
    path = tmp_path / "spool.seg"
    sp = Spool(path=path, boot_id="b")
    for s in range(1, 3001):
        sp.add(_batch("b", s, n=20))
        sp.ack(s - 1)
    one = _batch("b", 1, n=20).ByteSize()
    assert sp.depth == 1
    assert sp.file_bytes < 1024 * 1024 + 10 * one
    assert Spool(path=path, boot_id="x").depth == 1


def test_bound_drops_are_counted_and_forgotten_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "spool.seg"
    sp = Spool(max_batches=5, path=path, boot_id="b")
    for s in range(1, 21):
        sp.add(_batch("b", s))
    assert sp.dropped == 20 - 5  # produced minus what fits
    assert [b.seq for b in Spool(path=path, boot_id="c").pending()] == [16, 17, 18, 19, 20]


def test_sender_cursor_sees_only_new_batches(tmp_path: Path) -> None:
    sp = Spool()
    for s in range(1, 4):
        sp.add(_batch("b", s))
    first, cur = sp.after(0)
    assert [b.seq for b in first] == [1, 2, 3]
    sp.add(_batch("b", 4))
    nxt, cur2 = sp.after(cur)
    assert [b.seq for b in nxt] == [4]
    assert sp.after(cur2)[0] == []


def test_a_crash_loop_keeps_only_as_many_earlier_boots_as_a_hello_may_announce(tmp_path: Path) -> None:
    path = tmp_path / "spool.seg"
    for i in range(20):  # twenty boots, each died with two batches undelivered
        sp = Spool(path=path, boot_id=f"boot{i:02d}")
        sp.add(_batch(f"boot{i:02d}", 1))
        sp.add(_batch(f"boot{i:02d}", 2))
        sp.close()
    last = Spool(path=path, boot_id="now")
    assert last.other_boots() == [f"boot{i:02d}" for i in range(4, 20)]
    assert last.dropped == 2  # each start drops (and counts) what exceeds the cap: here one boot, two batches
