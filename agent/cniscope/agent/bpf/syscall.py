"""A narrow typed adapter over the bpf() syscall (ctypes, x86_64 syscall 321).

Only the commands cniscope needs: walking map/program/link ids, reading their info, counting map
entries (batched, with a GET_NEXT_KEY fallback), creating and filling maps (tests, benchmarks),
loading a raw-instruction program, creating links and opening pins. Every file descriptor is owned
by a :class:`Fd` that closes it exactly once.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from types import TracebackType

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD, OBJ_PIN, OBJ_GET, PROG_ATTACH, PROG_DETACH = 5, 6, 7, 8, 9
PROG_GET_NEXT_ID, MAP_GET_NEXT_ID, PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 11, 12, 13, 14, 15
MAP_LOOKUP_BATCH, MAP_UPDATE_BATCH = 24, 26
LINK_CREATE, LINK_GET_FD_BY_ID, LINK_GET_NEXT_ID, LINK_DETACH = 28, 30, 31, 34

BPF_F_RDONLY = 1 << 3
ENOTSUPP = 524  # kernel-internal "operation not supported", leaks out of some map ops
ATTR_SIZE = 128


class BpfError(OSError):
    """A bpf() command failed; ``errno`` is set, ``cmd`` names the command."""

    def __init__(self, cmd: str, err: int, log: str = "") -> None:
        text = "ENOTSUPP (operation not supported)" if err == ENOTSUPP else os.strerror(err)
        super().__init__(err, f"bpf({cmd}): {text}" + (f"\n{log}" if log else ""))
        self.cmd = cmd
        self.log = log


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char] | ctypes.Structure, name: str) -> int:
    """Issue one bpf() command; returns the non-negative result or raises :class:`BpfError`."""
    rc = int(_libc.syscall(SYS_BPF, ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr))))
    if rc < 0:
        raise BpfError(name, ctypes.get_errno())
    return rc


class Fd:
    """An owned file descriptor; closed on :meth:`close` or when the ``with`` block ends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Fd:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # a safety net only; callers close explicitly
        if getattr(self, "fd", -1) >= 0:
            self.close()


def addr(buf: ctypes.Array[ctypes.c_char] | ctypes.Array[ctypes.c_uint64] | None) -> int:
    return 0 if buf is None else ctypes.addressof(buf)


# --- attrs -----------------------------------------------------------------------------------------

class _GetId(ctypes.Structure):
    _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _InfoByFd(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _MapCreate(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * 16)]


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class _ObjPin(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


class _LinkCreate(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("flags", ctypes.c_uint32)]


class _ProgAttach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("attach_flags", ctypes.c_uint32)]


class _LinkDetach(ctypes.Structure):
    _fields_ = [("link_fd", ctypes.c_uint32)]


def _padded(st: ctypes.Structure) -> ctypes.Array[ctypes.c_char]:
    """The kernel requires every byte past the command's struct to be zero: pass a zeroed union."""
    buf = ctypes.create_string_buffer(ATTR_SIZE)
    ctypes.memmove(buf, ctypes.byref(st), ctypes.sizeof(st))
    return buf


def _call(cmd: int, st: ctypes.Structure, name: str) -> tuple[int, ctypes.Array[ctypes.c_char]]:
    buf = _padded(st)
    rc = bpf(cmd, buf, name)
    return rc, buf


# --- ids and fds ---------------------------------------------------------------------------------------

def _next_ids(cmd: int, name: str) -> list[int]:
    ids: list[int] = []
    start = 0
    while True:
        st = _GetId(start_id=start)
        try:
            _, buf = _call(cmd, st, name)
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return ids
            raise
        start = _GetId.from_buffer_copy(buf.raw[: ctypes.sizeof(_GetId)]).next_id
        ids.append(start)


def map_ids() -> list[int]:
    return _next_ids(MAP_GET_NEXT_ID, "MAP_GET_NEXT_ID")


def prog_ids() -> list[int]:
    return _next_ids(PROG_GET_NEXT_ID, "PROG_GET_NEXT_ID")


def link_ids() -> list[int]:
    return _next_ids(LINK_GET_NEXT_ID, "LINK_GET_NEXT_ID")


def _fd_by_id(cmd: int, obj_id: int, name: str, flags: int = 0) -> Fd:
    rc, _ = _call(cmd, _GetId(start_id=obj_id, open_flags=flags), name)
    return Fd(rc)


def map_fd_by_id(map_id: int) -> Fd:
    """Open a map by id. ENOENT means it vanished since it was listed."""
    return _fd_by_id(MAP_GET_FD_BY_ID, map_id, "MAP_GET_FD_BY_ID")


def prog_fd_by_id(prog_id: int) -> Fd:
    return _fd_by_id(PROG_GET_FD_BY_ID, prog_id, "PROG_GET_FD_BY_ID")


def link_fd_by_id(link_id: int) -> Fd:
    return _fd_by_id(LINK_GET_FD_BY_ID, link_id, "LINK_GET_FD_BY_ID")


def obj_info(fd: int, info: ctypes.Structure) -> None:
    """Fill ``info`` (a bpf_{map,prog,link}_info prefix) from the object behind ``fd``."""
    st = _InfoByFd(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _call(OBJ_GET_INFO_BY_FD, st, "OBJ_GET_INFO_BY_FD")


def obj_get(path: str, flags: int = BPF_F_RDONLY) -> Fd:
    """Open a pinned object from bpffs."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    rc, _ = _call(OBJ_GET, _ObjPin(pathname=ctypes.addressof(p), file_flags=flags), "OBJ_GET")
    return Fd(rc)


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    _call(OBJ_PIN, _ObjPin(pathname=ctypes.addressof(p), bpf_fd=fd), "OBJ_PIN")


def fdinfo(fd: int, proc: str = "/proc") -> dict[str, str]:
    """``/proc/self/fdinfo/FD`` as a dict (memlock, map_id, prog_id, link_type, ...)."""
    with open(f"{proc}/self/fdinfo/{fd}") as f:
        return parse_fdinfo(f.read())


def parse_fdinfo(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, val = line.partition(":")
        if sep:
            out[key.strip()] = val.strip()
    return out


# --- maps -------------------------------------------------------------------------------------------

def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str = "",
               flags: int = 0) -> Fd:
    st = _MapCreate(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
                    map_flags=flags, map_name=name.encode()[:15])
    rc, _ = _call(MAP_CREATE, st, "MAP_CREATE")
    return Fd(rc)


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    _call(MAP_UPDATE_ELEM, _ElemAttr(map_fd=fd, key=addr(k), value=addr(v), flags=flags), "MAP_UPDATE_ELEM")


def map_update_batch(fd: int, keys: bytes, values: bytes, count: int) -> int:
    """Insert ``count`` packed keys/values in one syscall; returns how many the kernel took."""
    k = ctypes.create_string_buffer(keys, len(keys))
    v = ctypes.create_string_buffer(values, len(values))
    st = _BatchAttr(keys=addr(k), values=addr(v), count=count, map_fd=fd)
    buf = _padded(st)
    bpf(MAP_UPDATE_BATCH, buf, "MAP_UPDATE_BATCH")
    return int(_BatchAttr.from_buffer_copy(buf.raw[: ctypes.sizeof(_BatchAttr)]).count)


def count_batched(fd: int, key_size: int, value_size: int, chunk: int = 4096) -> tuple[int, int]:
    """Count entries with MAP_LOOKUP_BATCH: one syscall per ``chunk`` entries.

    ``value_size`` is the per-call value stride (per-CPU maps: round_up(value, 8) x possible CPUs).
    Returns (entries, syscalls). Raises BpfError (EINVAL/ENOTSUPP) when the map type has no batch op.
    """
    tok = max(key_size, 8)
    in_b = ctypes.create_string_buffer(tok)
    out_b = ctypes.create_string_buffer(tok)
    keys = ctypes.create_string_buffer(key_size * chunk)
    vals = ctypes.create_string_buffer(max(value_size, 1) * chunk)
    total = calls = 0
    first = True
    while True:
        st = _BatchAttr(in_batch=0 if first else addr(in_b), out_batch=addr(out_b), keys=addr(keys),
                        values=addr(vals), count=chunk, map_fd=fd)
        buf = _padded(st)
        calls += 1
        try:
            bpf(MAP_LOOKUP_BATCH, buf, "MAP_LOOKUP_BATCH")
            done = False
        except BpfError as exc:
            if exc.errno != errno.ENOENT:
                raise
            done = True
        total += _BatchAttr.from_buffer_copy(buf.raw[: ctypes.sizeof(_BatchAttr)]).count
        if done:
            return total, calls
        ctypes.memmove(in_b, out_b, tok)
        first = False


def count_walk(fd: int, key_size: int, limit: int) -> tuple[int, int]:
    """Count entries with a per-entry MAP_GET_NEXT_KEY walk (map types without batch ops).

    ``limit`` bounds the walk (a map being refilled concurrently could otherwise never end).
    Returns (entries, syscalls).
    """
    cur = ctypes.create_string_buffer(max(key_size, 1))
    nxt = ctypes.create_string_buffer(max(key_size, 1))
    count = calls = 0
    first = True
    while count <= limit:
        calls += 1
        try:
            _call(MAP_GET_NEXT_KEY, _ElemAttr(map_fd=fd, key=0 if first else addr(cur), value=addr(nxt)),
                  "MAP_GET_NEXT_KEY")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return count, calls
            raise
        count += 1
        first = False
        ctypes.memmove(cur, nxt, key_size)
    return count, calls


# --- programs and links ------------------------------------------------------------------------------

PROG_TYPE_XDP = 6
ATTACH_BPF_XDP = 37
# r0 = XDP_PASS (2); exit — BPF_ALU64|BPF_MOV|BPF_K, then BPF_JMP|BPF_EXIT
XDP_PASS_INSNS = bytes([0xB7, 0x00, 0, 0, 2, 0, 0, 0]) + bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


PROG_TYPE_SCHED_CLS = 3
ATTACH_TCX_INGRESS, ATTACH_TCX_EGRESS = 46, 47
# r0 = 0 (TC_ACT_OK); exit
SCHED_CLS_OK_INSNS = bytes([0xB7, 0x00, 0, 0, 0, 0, 0, 0]) + bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


def prog_load(prog_type: int, insns: bytes, name: str, expected_attach_type: int = 0) -> Fd:
    """Load raw BPF instructions (no compiler); the verifier log is in the error on failure."""
    ib = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    st = _ProgLoad(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=addr(ib), license=addr(lic),
                   log_level=1, log_size=len(log), log_buf=addr(log), prog_name=name.encode()[:15],
                   expected_attach_type=expected_attach_type)
    try:
        rc, _ = _call(PROG_LOAD, st, "PROG_LOAD")
    except BpfError as exc:
        raise BpfError("PROG_LOAD", exc.errno or 0, log.value.decode(errors="replace").strip()) from None
    return Fd(rc)


def prog_load_xdp_pass(name: str = "cniscope_pass") -> Fd:
    """Load ``return XDP_PASS`` from two raw instructions."""
    return prog_load(PROG_TYPE_XDP, XDP_PASS_INSNS, name, ATTACH_BPF_XDP)


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> Fd:
    rc, _ = _call(LINK_CREATE, _LinkCreate(prog_fd=prog_fd, target=target, attach_type=attach_type, flags=flags),
                  "LINK_CREATE")
    return Fd(rc)


def link_detach(link_fd: int) -> None:
    _call(LINK_DETACH, _LinkDetach(link_fd=link_fd), "LINK_DETACH")


PROG_TYPE_CGROUP_SKB = 8
ATTACH_CGROUP_INET_INGRESS, ATTACH_CGROUP_INET_EGRESS = 0, 1
# r0 = 1 (allow); exit
CGROUP_SKB_ALLOW_INSNS = bytes([0xB7, 0x00, 0, 0, 1, 0, 0, 0]) + bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    """Classic (link-less) attachment, e.g. a program on a cgroup directory fd."""
    _call(PROG_ATTACH, _ProgAttach(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type,
                                   attach_flags=flags), "PROG_ATTACH")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    _call(PROG_DETACH, _ProgAttach(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type),
          "PROG_DETACH")
