"""Reading raw samples wherever they are: the head (one blob per batch, just received) and the
compressed chunks (:mod:`.compaction`). Everyone reads through :func:`read_samples` (re-exported by
the store), never the tables."""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from cniscope.collector import chunks
from cniscope.collector.blobs import decode_samples


class SampleRow(NamedTuple):
    node: str
    boot_id: str
    seq: int
    name: str
    labels: dict[str, str]
    value: float
    t_ns: int


# A sample is stamped when it is taken, a batch when it is sent: the batch's time bounds its samples'
# within this much (the agent's longest batching interval), which lets time-window reads use the index.
SAMPLE_SLACK_NS = 120 * 10**9

_Batch = tuple[int, int, Iterator[SampleRow]]   # (agent time, tie-break, its rows)


def _in(col: str, values: Sequence[str] | None, args: list[Any]) -> str:
    if values is None:
        return ""
    args.extend(values)
    return f" AND {col} IN ({','.join('?' * len(values))})"


def _head_rows(node: str, boot_id: str, seq: int, blob: bytes, want: set[str] | None,
               t0_ns: int, t1_ns: int) -> Iterator[SampleRow]:
    for smp in decode_samples(blob):
        if (want is None or smp.name in want) and t0_ns <= smp.time_unix_nano <= t1_ns:
            yield SampleRow(node, boot_id, seq, smp.name, dict(smp.labels), smp.value, smp.time_unix_nano)


def _chunk_batches(node: str, boot_id: str, body: bytes, want: set[str] | None, t0_ns: int,
                   t1_ns: int) -> Iterator[tuple[int, Iterator[SampleRow]]]:
    c = chunks.decode(body)
    keep = [want is None or name in want for name, _ in c.series]
    labels = [dict(lab) for _, lab in c.series]
    for b in sorted(c.batches, key=lambda b: b.agent_ns):
        rows = [SampleRow(node, boot_id, b.seq, c.series[i][0], dict(labels[i]), v, t)
                for i, t, v in b.samples if keep[i] and t0_ns <= t <= t1_ns]
        yield b.agent_ns, iter(rows)


def read_samples(conn: sqlite3.Connection, t0_ns: int, t1_ns: int, nodes: Sequence[str] | None = None,
                 names: Sequence[str] | None = None) -> Iterator[SampleRow]:
    """Raw samples with t0_ns ≤ time ≤ t1_ns (optionally of some nodes and names), oldest batch first.

    Chunks are opened only when the merge reaches their first batch, so a long window never holds
    more than the chunks that overlap in time (about one per node)."""
    want = set(names) if names is not None else None
    args: list[Any] = [t0_ns, t1_ns + SAMPLE_SLACK_NS]
    head = conn.execute("SELECT node, boot_id, seq, agent_ns, samples FROM batches WHERE samples IS NOT NULL "
                        "AND agent_ns BETWEEN ? AND ?" + _in("node", nodes, args) + " ORDER BY agent_ns", args)
    cargs: list[Any] = [t0_ns, t1_ns + SAMPLE_SLACK_NS]
    pending = conn.execute("SELECT node, boot_id, t0_ns, body FROM chunks WHERE t1_ns >= ? AND t0_ns <= ?"
                           + _in("node", nodes, cargs) + " ORDER BY t0_ns", cargs).fetchall()
    tie = itertools.count()
    heap: list[tuple[int, int, Iterator[SampleRow], Iterator[tuple[int, Iterator[SampleRow]]]]] = []

    def push(src: Iterator[tuple[int, Iterator[SampleRow]]]) -> None:
        for t, rows in src:
            heapq.heappush(heap, (t, next(tie), rows, src))
            return

    push((t, _head_rows(n, b, s, blob, want, t0_ns, t1_ns)) for n, b, s, t, blob in head)
    p = 0
    while heap or p < len(pending):
        # open every chunk that starts before the earliest batch still waiting
        while p < len(pending) and (not heap or pending[p][2] <= heap[0][0]):
            node, boot, _, body = pending[p]
            push(_chunk_batches(node, boot, body, want, t0_ns, t1_ns))
            p += 1
        if not heap:
            continue
        _, _, rows, src = heapq.heappop(heap)
        yield from rows
        push(src)


def stored_batches(conn: sqlite3.Connection, node: str | None = None) -> Iterator[tuple[str, str, int, int, int]]:
    """(node, boot_id, seq, agent_ns, received_ns) of every stored batch, head and chunks, by node, boot, seq."""
    args: list[Any] = []
    where = " WHERE node = ?" if node is not None else ""
    if node is not None:
        args.append(node)
    out: list[tuple[str, str, int, int, int]] = [
        (n, b, s, a, r) for n, b, s, a, r in conn.execute(
            f"SELECT node, boot_id, seq, agent_ns, received_ns FROM batches{where}", args)]
    for n, b, body in conn.execute(f"SELECT node, boot_id, body FROM chunks{where}", args):
        out.extend((n, b, cb.seq, cb.agent_ns, cb.received_ns) for cb in chunks.decode(body).batches)
    yield from sorted(out)
