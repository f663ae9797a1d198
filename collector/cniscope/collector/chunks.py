"""The compressed form of raw samples: one chunk holds many batches of one (node, boot).

Agents send the same series every interval, so a chunk stores each series' name and labels once (a
series dictionary), each batch's layout only when it differs from the previous batch's, sample times
as small offsets from their batch's time, and each series' values as a column: decimal values (what
agents send: counts, bytes, millicores with a few decimals) as varint deltas of their scaled integer,
anything else as the XOR of consecutive IEEE doubles. Every column is varint-packed and the whole
payload deflated (zlib). Decoding gives back every batch's seq, times and samples exactly, values bit
for bit (a column falls back to XOR whenever a decimal round trip would not be exact).

Layout of a body: one version byte, then the deflated payload::

    series   n, then per series: name, n labels, (key, value) …
    batches  n, then columns: seq deltas, agent time delta-of-deltas, (received - agent) deltas,
             spool_dropped deltas, spool_depth, layouts (0: as the previous batch; else n+1, indexes …),
             sample time offsets (first from its batch's time, then from the previous sample's)
    values   per series: mode (0 XOR, k+1 decimal with k digits), then one entry per occurrence
             (XOR: every entry's count of leading zero bytes, then the entries without them)
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from cniscope.core.errors import StoreError

VERSION = 1
ZLIB_LEVEL = 6
MAX_SCALE = 9           # decimal digits tried per value; 10**9 * 2**53 keeps every scaled value exact
_EXACT = 2**53
_D = struct.Struct(">d")
_Q = struct.Struct(">Q")

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]   # name, sorted labels


@dataclass
class ChunkBatch:
    """One batch as a chunk holds it: its samples as (series index, time, value)."""

    seq: int
    agent_ns: int
    received_ns: int
    spool_dropped: int
    spool_depth: int
    samples: list[tuple[int, int, float]]


@dataclass
class Chunk:
    series: list[SeriesKey]
    batches: list[ChunkBatch]


# ---- varints ----------------------------------------------------------------------------------
def _put(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _putz(out: bytearray, n: int) -> None:
    _put(out, (n << 1) if n >= 0 else ((-n << 1) - 1))


def _putstr(out: bytearray, s: str) -> None:
    b = s.encode()
    _put(out, len(b))
    out += b


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def u(self) -> int:
        buf, pos = self.buf, self.pos
        b = buf[pos]
        pos += 1
        if b < 0x80:
            self.pos = pos
            return b
        n, shift = b & 0x7F, 7
        while True:
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return n
            shift += 7

    def z(self) -> int:
        n = self.u()
        return (n >> 1) if not n & 1 else -((n + 1) >> 1)

    def s(self) -> str:
        n = self.u()
        out = self.buf[self.pos:self.pos + n].decode()
        self.pos += n
        return out

    def raw(self, n: int) -> bytes:
        out = self.buf[self.pos:self.pos + n]
        if len(out) != n:
            raise IndexError("chunk body ends early")
        self.pos += n
        return out


# ---- values -----------------------------------------------------------------------------------
def _scale(v: float) -> int:
    """The fewest decimal digits that write ``v`` exactly, or -1 (not a short decimal, -0.0, ±inf, NaN)."""
    if v.is_integer():
        return 0 if (v != 0.0 or math.copysign(1.0, v) > 0) and abs(v) < _EXACT else -1
    if not math.isfinite(v):
        return -1
    p = 1
    for k in range(1, MAX_SCALE + 1):
        p *= 10
        m = round(v * p)
        if abs(m) >= _EXACT:
            return -1
        if m / p == v:
            return k
    return -1


def _encode_values(out: bytearray, values: Sequence[float]) -> None:
    k = 0
    for v in values:
        s = _scale(v)
        if s < 0:
            k = -1
            break
        k = max(k, s)
    if k >= 0:
        p = 10**k
        ms = [round(v * p) for v in values]
        if all(abs(m) < _EXACT and (m / p if k else float(m)) == v for m, v in zip(ms, values, strict=True)):
            _put(out, k + 1)
            prev = 0
            for m in ms:
                _putz(out, m - prev)
                prev = m
            return
    _put(out, 0)  # XOR with the previous value; its leading zero bytes are dropped and counted
    prev_bits = 0
    leads, rest = bytearray(), bytearray()
    for v in values:
        bits = _Q.unpack(_D.pack(v))[0]
        tail = _Q.pack(bits ^ prev_bits).lstrip(b"\0")
        leads.append(8 - len(tail))
        rest += tail
        prev_bits = bits
    out += leads
    out += rest


def _decode_values(r: _Reader, n: int) -> list[float]:
    mode = r.u()
    out: list[float] = []
    if mode == 0:
        prev = 0
        for lead in r.raw(n):
            if lead > 8:
                raise ValueError("XOR value longer than 8 bytes")
            prev ^= int.from_bytes(r.raw(8 - lead), "big")
            out.append(_D.unpack(_Q.pack(prev))[0])
        return out
    k = mode - 1
    if k > MAX_SCALE:
        raise ValueError(f"value scale {k} out of range")
    p = 10**k
    m = 0
    for _ in range(n):
        m += r.z()
        out.append(m / p if k else float(m))
    return out


# ---- chunks -----------------------------------------------------------------------------------
def series_key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    return (name, tuple(sorted(labels.items())) if labels else ())


def encode(chunk: Chunk) -> bytes:
    out = bytearray()
    _put(out, len(chunk.series))
    for name, labels in chunk.series:
        _putstr(out, name)
        _put(out, len(labels))
        for k, v in labels:
            _putstr(out, k)
            _putstr(out, v)
    bs = chunk.batches
    _put(out, len(bs))
    prev = 0
    for b in bs:
        _putz(out, b.seq - prev)
        prev = b.seq
    prev, prev_delta = 0, 0
    for b in bs:
        delta = b.agent_ns - prev
        _putz(out, delta - prev_delta)
        prev, prev_delta = b.agent_ns, delta
    prev = 0
    for b in bs:
        lag = b.received_ns - b.agent_ns
        _putz(out, lag - prev)
        prev = lag
    prev = 0
    for b in bs:
        _putz(out, b.spool_dropped - prev)
        prev = b.spool_dropped
    for b in bs:
        _put(out, b.spool_depth)
    last: list[int] | None = None
    for b in bs:
        layout = [s[0] for s in b.samples]
        if layout == last:
            _put(out, 0)
            continue
        _put(out, len(layout) + 1)
        for i in layout:
            _put(out, i)
        last = layout
    columns: list[list[float]] = [[] for _ in chunk.series]
    for b in bs:
        ref = b.agent_ns
        for i, t, val in b.samples:
            _putz(out, t - ref)
            ref = t
            columns[i].append(val)
    for col in columns:
        _encode_values(out, col)
    return bytes([VERSION]) + zlib.compress(bytes(out), ZLIB_LEVEL)


def decode(body: bytes) -> Chunk:
    if not body or body[0] != VERSION:
        raise StoreError(f"unknown chunk format {body[:1].hex() or 'empty'}")
    try:
        return _decode(zlib.decompress(body[1:]))
    except (zlib.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"corrupt chunk: {exc}") from None


def _decode(payload: bytes) -> Chunk:
    r = _Reader(payload)
    series: list[SeriesKey] = []
    for _ in range(r.u()):
        name = r.s()
        series.append((name, tuple((r.s(), r.s()) for _ in range(r.u()))))
    n = r.u()
    seqs, prev = [], 0
    for _ in range(n):
        prev += r.z()
        seqs.append(prev)
    agent, prev, prev_delta = [], 0, 0
    for _ in range(n):
        prev_delta += r.z()
        prev += prev_delta
        agent.append(prev)
    received, lag = [], 0
    for t in agent:
        lag += r.z()
        received.append(t + lag)
    dropped, prev = [], 0
    for _ in range(n):
        prev += r.z()
        dropped.append(prev)
    depth = [r.u() for _ in range(n)]
    layouts: list[list[int]] = []
    last: list[int] = []
    for _ in range(n):
        m = r.u()
        if m:
            last = [r.u() for _ in range(m - 1)]
            if any(i >= len(series) for i in last):
                raise ValueError("layout names an unknown series")
        layouts.append(last)
    times: list[list[int]] = []
    counts = [0] * len(series)
    for t, layout in zip(agent, layouts, strict=True):
        ts, ref = [], t
        for i in layout:
            ref += r.z()
            ts.append(ref)
            counts[i] += 1
        times.append(ts)
    columns = [iter(_decode_values(r, c)) for c in counts]
    batches = []
    for j in range(n):
        samples = [(i, t, next(columns[i])) for i, t in zip(layouts[j], times[j], strict=True)]
        batches.append(ChunkBatch(seqs[j], agent[j], received[j], dropped[j], depth[j], samples))
    return Chunk(series, batches)


class ChunkBuilder:
    """Collects batches (in seq order) into a :class:`Chunk`, numbering series as they first appear."""

    def __init__(self) -> None:
        self.index: dict[SeriesKey, int] = {}
        self.chunk = Chunk([], [])
        self.samples = 0

    def add(self, seq: int, agent_ns: int, received_ns: int, spool_dropped: int, spool_depth: int,
            samples: Iterable[tuple[str, Mapping[str, str], float, int]]) -> None:
        """``samples``: (name, labels, value, time); a time of 0 takes the batch's."""
        out = []
        index = self.index
        for name, labels, value, t in samples:
            key = series_key(name, labels)
            i = index.get(key)
            if i is None:
                i = index[key] = len(self.chunk.series)
                self.chunk.series.append(key)
            out.append((i, t or agent_ns, float(value)))
        self.samples += len(out)
        self.chunk.batches.append(ChunkBatch(seq, agent_ns, received_ns, spool_dropped, spool_depth, out))


def iter_samples(chunk: Chunk) -> Iterator[tuple[ChunkBatch, SeriesKey, int, float]]:
    """Every sample with its batch and series, in batch order."""
    series = chunk.series
    for b in chunk.batches:
        for i, t, v in b.samples:
            yield b, series[i], t, v
