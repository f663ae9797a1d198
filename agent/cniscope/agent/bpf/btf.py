"""Member offsets of kernel structs from the running kernel's BTF (/sys/kernel/btf/vmlinux).

Tracers read a few kernel fields (a socket's namespace, an skb's device). Kernel headers installed
on a node may belong to another kernel release, so offsets come from BTF, looked up here and handed
to the BPF program as map values — the program itself stays free of struct layouts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from cniscope.core.errors import ParseError

BTF_MAGIC = 0xEB9F
STRUCT, UNION = 4, 5
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}       # kind → extra bytes (INT, ARRAY, VAR, DECL_TAG)
_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT UNION ENUM FUNC_PROTO DATASEC ENUM64
_MODIFIERS = {8, 9, 10, 11, 18}             # TYPEDEF VOLATILE CONST RESTRICT TYPE_TAG


@dataclass(frozen=True)
class _Type:
    kind: int
    name: str
    size_or_type: int
    members: tuple[tuple[str, int, int], ...]  # (name, type id, bit offset)


class Btf:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise ParseError("BTF: file shorter than its header")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != BTF_MAGIC:
            raise ParseError(f"BTF: bad magic 0x{magic:x}")
        strs = data[hdr_len + str_off: hdr_len + str_off + str_len]
        if len(strs) != str_len:
            raise ParseError("BTF: string section truncated")

        def name(off: int) -> str:
            end = strs.find(b"\0", off)
            return strs[off:end].decode(errors="replace")

        self.types: list[_Type | None] = [None]
        self.by_name: dict[tuple[int, str], int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        if end > len(data):
            raise ParseError("BTF: type section truncated")
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[tuple[str, int, int], ...] = ()
            if kind in (STRUCT, UNION):
                ms = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                    ms.append((name(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
                members = tuple(ms)
            pos += _FIXED.get(kind, 0) + _PER_VLEN.get(kind, 0) * vlen
            t = _Type(kind, name(name_off), size_or_type, members)
            self.types.append(t)
            if t.name and kind in (STRUCT, UNION):
                self.by_name.setdefault((kind, t.name), len(self.types) - 1)

    @classmethod
    def load(cls, path: Path = Path("/sys/kernel/btf/vmlinux")) -> Btf:
        return cls(path.read_bytes())

    def _resolve(self, tid: int) -> _Type:
        t = self.types[tid]
        while t is not None and t.kind in _MODIFIERS:
            t = self.types[t.size_or_type]
        if t is None:
            raise ParseError(f"BTF: type {tid} resolves to void")
        return t

    def _find(self, t: _Type, member: str) -> int | None:
        """Bit offset of ``member`` in ``t``, looking through anonymous structs/unions."""
        for name, tid, off in t.members:
            if name == member:
                return off
            if not name:
                inner = self._resolve(tid)
                if inner.kind in (STRUCT, UNION):
                    sub = self._find(inner, member)
                    if sub is not None:
                        return off + sub
        return None

    def _member_type(self, t: _Type, member: str) -> _Type:
        for name, tid, _ in t.members:
            if name == member:
                return self._resolve(tid)
            if not name:
                inner = self._resolve(tid)
                if inner.kind in (STRUCT, UNION) and self._find(inner, member) is not None:
                    return self._member_type(inner, member)
        raise KeyError(member)

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted member path, e.g. ``offset("sock", "__sk_common.skc_net.net")``."""
        tid = self.by_name.get((STRUCT, struct_name))
        if tid is None:
            raise KeyError(f"struct {struct_name} not in BTF")
        t = self._resolve(tid)
        bits = 0
        for part in path.split("."):
            off = self._find(t, part)
            if off is None:
                raise KeyError(f"struct {struct_name}: no member {path!r} (at {part!r})")
            bits += off
            t = self._member_type(t, part)
        if bits % 8:
            raise KeyError(f"struct {struct_name}.{path} is a bitfield")
        return bits // 8
