"""Single map elements through the bpf() syscall: look one up, delete one, list the keys. For
programs that keep maps of their own (the lab's socket-LB datapath) and tests that check a value."""

from __future__ import annotations

import ctypes
import errno

from cniscope.agent.bpf.syscall import (
    MAP_DELETE_ELEM,
    MAP_GET_NEXT_KEY,
    MAP_LOOKUP_ELEM,
    BpfError,
    _call,
    _ElemAttr,
    addr,
)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """One value, or None when ``key`` is absent."""
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value_size)
    try:
        _call(MAP_LOOKUP_ELEM, _ElemAttr(map_fd=fd, key=addr(k), value=addr(v)), "MAP_LOOKUP_ELEM")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return v.raw


def map_delete(fd: int, key: bytes) -> bool:
    """Delete one key; False when it was absent."""
    k = ctypes.create_string_buffer(key, len(key))
    try:
        _call(MAP_DELETE_ELEM, _ElemAttr(map_fd=fd, key=addr(k)), "MAP_DELETE_ELEM")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_keys(fd: int, key_size: int, limit: int) -> list[bytes]:
    """Every key of a hash-like map, by a GET_NEXT_KEY walk of at most ``limit`` keys."""
    cur, nxt = ctypes.create_string_buffer(key_size), ctypes.create_string_buffer(key_size)
    out: list[bytes] = []
    while len(out) < limit:
        try:
            _call(MAP_GET_NEXT_KEY, _ElemAttr(map_fd=fd, key=addr(cur) if out else 0, value=addr(nxt)),
                  "MAP_GET_NEXT_KEY")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                break
            raise
        out.append(nxt.raw)
        ctypes.memmove(cur, nxt, key_size)
    return out
