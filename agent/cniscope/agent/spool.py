"""The agent's bounded spool of un-acknowledged batches, optionally backed by an on-disk segment file.

Batches stay here until the collector acknowledges their seq (cumulative per boot_id). When the
bound (count or bytes) forces the oldest out, they are counted in ``dropped`` — never silently lost.
A batch the collector refuses (a typed ``Refusal``: it will never store it) leaves at once and is
counted in ``refused``; it is not sent again in this process.

With a ``path`` every change is appended to a segment file as a length-prefixed record::

    u32 length | u8 kind | payload        kind A: a Batch   kind K: an Ack (boot_id, seq released)

``Spool.open(path)`` replays the file, so an agent restarted after a crash or SIGKILL still holds the
batches the collector had not acknowledged — under their original boot_id (see ``Hello.replay_boot_ids``).
Each write goes straight to the kernel (no user-space buffer), so a killed process loses nothing;
a torn record at the end (power loss mid-write) is ignored. The file is rewritten compactly when
more than half of it is dead.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import struct
from collections import OrderedDict
from pathlib import Path

from cniscope.api.v1 import agent_pb2

log = logging.getLogger("cniscope.agent.spool")

Key = tuple[str, int]
_HDR = struct.Struct("<IB")
_ADD, _ACK = 0x41, 0x4B
MAX_RECORD = 64 * 1024 * 1024
MAX_REPLAY_BOOTS = 16        # the collector accepts this many earlier boots in one Hello
COMPACT_MIN_BYTES = 1 * 1024 * 1024


class Spool:
    def __init__(self, max_batches: int = 10_000, max_bytes: int = 32 * 1024 * 1024,
                 path: str | Path | None = None, boot_id: str = "") -> None:
        if max_batches < 1 or max_bytes < 1:
            raise ValueError("spool bounds must be positive")
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._items: OrderedDict[Key, tuple[agent_pb2.Batch, int, int]] = OrderedDict()
        self._bytes = 0
        self._counter = 0            # insertion order, for the sender's cursor
        self.dropped = 0
        self.refused = 0             # batches the collector refused, dropped instead of resent
        self.acked: dict[str, int] = {}
        self.boot_id = boot_id       # the live boot; acked_seq refers to it
        self.path = Path(path) if path else None
        self._fd: int | None = None
        self._file_bytes = 0
        self.recovered = 0           # batches found in the file at open
        if self.path is not None:
            self._load()

    # ---- state ---------------------------------------------------------------------------------
    def add(self, batch: agent_pb2.Batch) -> None:
        if not self.boot_id:
            self.boot_id = batch.boot_id
        data = batch.SerializeToString()
        self._insert(batch, len(data))
        self._append(_ADD, data)
        while len(self._items) > self.max_batches or (self._bytes > self.max_bytes and len(self._items) > 1):
            (boot, seq), (_, sz, _) = self._items.popitem(last=False)
            self._bytes -= sz
            self.dropped += 1
            self._append(_ACK, agent_pb2.Ack(boot_id=boot, seq=seq).SerializeToString())
        self._maybe_compact()

    def _insert(self, batch: agent_pb2.Batch, size: int) -> None:
        key = (batch.boot_id, batch.seq)
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._counter += 1
        self._items[key] = (batch, size, self._counter)
        self._bytes += size

    def ack(self, seq: int, boot_id: str | None = None) -> int:
        """Forget every batch of ``boot_id`` (default: the live boot) up to and including ``seq``."""
        boot = self.boot_id if boot_id is None else boot_id
        advanced = seq > self.acked.get(boot, 0)
        if advanced:
            self.acked[boot] = seq
        released = self._release(boot, seq)
        if released or advanced:
            self._append(_ACK, agent_pb2.Ack(boot_id=boot, seq=seq).SerializeToString())
            self._maybe_compact()
        return released

    def refuse(self, boot_id: str, seq: int) -> bool:
        """The collector refused this batch for good: forget it (True when it was still held)."""
        item = self._items.pop((boot_id, seq), None)
        if item is None:
            return False
        self._bytes -= item[1]
        self.refused += 1
        return True

    def _release(self, boot: str, seq: int) -> int:
        gone: list[Key] = []
        for k in self._items:  # insertion order: within a boot, seqs increase
            if k[0] != boot:
                continue
            if k[1] > seq:
                break
            gone.append(k)
        for k in gone:
            _, sz, _ = self._items.pop(k)
            self._bytes -= sz
        return len(gone)

    @property
    def acked_seq(self) -> int:
        return self.acked.get(self.boot_id, 0)

    def pending(self) -> list[agent_pb2.Batch]:
        return [b for b, _, _ in self._items.values()]

    def after(self, cursor: int) -> tuple[list[agent_pb2.Batch], int]:
        """Batches inserted after ``cursor`` (oldest first) and the new cursor."""
        out: list[agent_pb2.Batch] = []
        for b, _, idx in reversed(self._items.values()):
            if idx <= cursor:
                break
            out.append(b)
        out.reverse()
        return out, self._counter

    def other_boots(self) -> list[str]:
        """Earlier boots with batches still waiting, in the order they were spooled."""
        seen: dict[str, None] = {}
        for boot, _ in self._items:
            if boot != self.boot_id:
                seen.setdefault(boot, None)
        return list(seen)

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    # ---- the segment file ----------------------------------------------------------------------
    def _load(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        good = 0
        with contextlib.suppress(FileNotFoundError):
            data = self.path.read_bytes()
            pos = 0
            while pos + _HDR.size <= len(data):
                length, kind = _HDR.unpack_from(data, pos)
                end = pos + _HDR.size + length
                if length > MAX_RECORD or end > len(data) or kind not in (_ADD, _ACK):
                    break
                payload = data[pos + _HDR.size:end]
                try:
                    if kind == _ADD:
                        b = agent_pb2.Batch()
                        b.ParseFromString(payload)
                        if b.seq > self.acked.get(b.boot_id, 0):
                            self._insert(b, length)
                    else:
                        a = agent_pb2.Ack()
                        a.ParseFromString(payload)
                        self.acked[a.boot_id] = max(a.seq, self.acked.get(a.boot_id, 0))
                        self._release(a.boot_id, a.seq)
                except Exception:  # a corrupt record: keep what came before it
                    break
                pos = good = end
            if good < len(data):
                log.warning("spool file %s: ignored %d bytes of a torn or corrupt tail", self.path, len(data) - good)
        boots = self.other_boots()
        for boot in boots[:max(0, len(boots) - MAX_REPLAY_BOOTS)]:  # a crash loop: keep the newest boots
            gone = [k for k in self._items if k[0] == boot]
            for k in gone:
                self._bytes -= self._items.pop(k)[1]
            self.dropped += len(gone)
            log.warning("spool file %s: dropped %d batches of boot %s (more than %d earlier boots)",
                        self.path, len(gone), boot[:8], MAX_REPLAY_BOOTS)
        self.recovered = len(self._items)
        self._rewrite()  # start from a compact file holding exactly what was recovered

    def _append(self, kind: int, payload: builtins.bytes) -> None:
        if self._fd is None:
            return
        rec = _HDR.pack(len(payload), kind) + payload
        try:
            os.write(self._fd, rec)
            self._file_bytes += len(rec)
        except OSError as exc:  # a full disk degrades to an in-memory spool, loudly
            log.error("spool file %s unwritable (%s); continuing in memory", self.path, exc)
            self._close_fd()

    def _maybe_compact(self) -> None:
        if self._fd is not None and self._file_bytes > max(COMPACT_MIN_BYTES, 2 * (self._bytes + 64 * len(self._items))):
            self._rewrite()

    def _rewrite(self) -> None:
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        chunks: list[builtins.bytes] = []
        for boot, seq in sorted(self.acked.items()):
            if any(k[0] == boot for k in self._items):
                p = agent_pb2.Ack(boot_id=boot, seq=seq).SerializeToString()
                chunks.append(_HDR.pack(len(p), _ACK) + p)
        for b, _, _ in self._items.values():
            p = b.SerializeToString()
            chunks.append(_HDR.pack(len(p), _ADD) + p)
        blob = b"".join(chunks)
        try:
            with open(tmp, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot write spool file %s (%s); continuing in memory", self.path, exc)
            self._close_fd()
            return
        self._close_fd()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._file_bytes = len(blob)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close_fd()

    @property
    def file_bytes(self) -> int:
        return self._file_bytes
