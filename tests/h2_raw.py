"""A hand-made HTTP/2 client for hostile-load tests: it opens gRPC calls and sends exactly the bytes
it is told to (a message prefix announcing 4 MiB and then a little less than that, say), honouring
the server's flow control like a real client, and never finishing unless told to. No h2 library:
the few frame types a gRPC request needs are written here (RFC 9113; HPACK literals only)."""

from __future__ import annotations

import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
INITIAL_WINDOW = 65_535


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (lengths below 127)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + _hpack_len(len(v)) + v


def _hpack_len(n: int) -> bytes:
    if n < 127:
        return bytes([n])
    out, n = bytearray([127]), n - 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def grpc_prefix(length: int) -> bytes:
    """The 5-byte gRPC message prefix: not compressed, ``length`` bytes follow."""
    return b"\x00" + struct.pack(">I", length)


@dataclass
class _Stream:
    window: int = INITIAL_WINDOW
    pending: bytearray = field(default_factory=bytearray)
    end: bool = False
    closed: bool = False
    status: str = ""
    message: str = ""


class RawH2:
    """One HTTP/2 connection. ``open(path, data, end)`` starts a call and queues ``data``; bytes leave
    as the server's windows allow. ``reset`` tells whether the server ended a stream (and how)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)
        self._lock = threading.Lock()
        self._conn_window = INITIAL_WINDOW
        self._initial = INITIAL_WINDOW
        self._streams: dict[int, _Stream] = {}
        self._next = 1
        self.closed = False
        self.goaway = False
        self.sock.sendall(PREFACE + _frame(SETTINGS, 0, 0, b""))
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def open(self, path: str, data: bytes, *, end: bool = False, authority: str = "localhost",
             metadata: tuple[tuple[str, str], ...] = ()) -> int:
        block = b"".join(_literal(k, v) for k, v in (
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"), *metadata))
        with self._lock:
            sid = self._next
            self._next += 2
            st = self._streams[sid] = _Stream(window=self._initial)
            st.pending += data
            st.end = end
            self.sock.sendall(_frame(HEADERS, END_HEADERS, sid, block))
            self._flush()
        return sid

    def status(self, sid: int) -> str:
        """'' while the stream is open; else how it ended (``grpc-status`` value or ``rst``)."""
        with self._lock:
            st = self._streams[sid]
            return st.status if st.closed else ""

    def grant(self, sid: int, n: int = 1 << 30) -> None:
        """Let the server send ``n`` more bytes on ``sid`` (and the connection): start reading."""
        inc = struct.pack(">I", min(n, 0x7FFFFFFF))
        with self._lock:
            self.sock.sendall(_frame(WINDOW_UPDATE, 0, 0, inc) + _frame(WINDOW_UPDATE, 0, sid, inc))

    def message(self, sid: int) -> str:
        """The ``grpc-message`` the server ended ``sid`` with, when it sent one as a literal."""
        with self._lock:
            return self._streams[sid].message

    def sent_all(self, sid: int) -> bool:
        with self._lock:
            return not self._streams[sid].pending

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # ---- internals ---------------------------------------------------------------------------
    def _flush(self) -> None:
        for sid, st in self._streams.items():
            while st.pending and not st.closed:
                n = min(len(st.pending), st.window, self._conn_window, 16_384)
                if n <= 0:
                    break
                chunk = bytes(st.pending[:n])
                del st.pending[:n]
                st.window -= n
                self._conn_window -= n
                last = st.end and not st.pending
                self.sock.sendall(_frame(DATA, END_STREAM if last else 0, sid, chunk))

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = self.sock.recv(n - len(buf))
            if not got:
                raise EOFError
            buf += got
        return buf

    def _read_loop(self) -> None:
        try:
            while not self.closed:
                head = self._recv(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                sid = struct.unpack(">I", head[5:])[0] & 0x7FFFFFFF
                payload = self._recv(length) if length else b""
                with self._lock:
                    self._on_frame(kind, flags, sid, payload)
        except (OSError, EOFError):
            pass
        finally:
            with self._lock:
                for st in self._streams.values():
                    if not st.closed:
                        st.closed, st.status = True, "connection closed"

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                if ident == 4:  # SETTINGS_INITIAL_WINDOW_SIZE
                    for st in self._streams.values():
                        st.window += value - self._initial
                    self._initial = value
            self.sock.sendall(_frame(SETTINGS, ACK, 0, b""))
        elif kind == PING and not flags & ACK:
            self.sock.sendall(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if sid == 0:
                self._conn_window += inc
            elif sid in self._streams:
                self._streams[sid].window += inc
        elif kind == RST_STREAM and sid in self._streams:
            st = self._streams[sid]
            st.closed, st.status = True, st.status or "rst"
        elif kind == HEADERS and sid in self._streams:
            st = self._streams[sid]
            text = payload.decode("latin-1", "replace")
            if "grpc-status" in text or flags & END_STREAM:
                st.status = _literal_value(payload, b"grpc-status") or "ended"
                st.message = urllib.parse.unquote(_literal_value(payload, b"grpc-message"))
            if flags & END_STREAM:
                st.closed = True
        elif kind == DATA and sid in self._streams and flags & END_STREAM:
            st = self._streams[sid]
            st.closed, st.status = True, st.status or "ended"
        elif kind == GOAWAY:
            self.goaway = True
        self._flush()


def _literal_value(block: bytes, name: bytes) -> str:
    """A header's value when the server sent it as a literal with a new name and no Huffman coding
    (grpc core does for grpc-status and grpc-message); '' when it cannot be read without a full HPACK
    decoder."""
    i = block.find(name)
    j = i + len(name)
    if i < 0 or j >= len(block) or block[j] & 0x80:
        return ""
    n, j = block[j] & 0x7F, j + 1
    if n == 127:  # a longer value: HPACK's integer continuation
        shift = 0
        while j < len(block):
            b = block[j]
            n += (b & 0x7F) << shift
            j, shift = j + 1, shift + 7
            if not b & 0x80:
                break
    return block[j:j + n].decode("latin-1", "replace")
