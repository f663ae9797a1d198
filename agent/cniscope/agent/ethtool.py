"""The SIOCETHTOOL ioctls cniscope reads: driver info, legacy link settings, channels, offloads."""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
from dataclasses import dataclass

SIOCETHTOOL = 0x8946
GSET, GDRVINFO, GTSO, GGSO, GGRO, GCHANNELS = 0x01, 0x03, 0x1E, 0x23, 0x2B, 0x3C
SPEED_UNKNOWN = 0xFFFFFFFF


@dataclass(frozen=True)
class DrvInfo:
    driver: str
    version: str
    firmware: str
    bus: str


def _ioctl(sock: socket.socket, ifname: str, data: bytearray) -> bytearray:
    buf = bytearray(data)
    # struct ifreq: 16-byte name + pointer to the ethtool command buffer
    cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
    ifr = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(cbuf)) + b"\0" * 16
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return buf


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace")


def parse_drvinfo(buf: bytes | bytearray) -> DrvInfo:
    f = struct.unpack_from("I32s32s32s32s", buf)
    return DrvInfo(driver=_cstr(f[1]), version=_cstr(f[2]), firmware=_cstr(f[3]), bus=_cstr(f[4]))


def drvinfo(sock: socket.socket, ifname: str) -> DrvInfo:
    return parse_drvinfo(_ioctl(sock, ifname, bytearray(struct.pack("I", GDRVINFO) + bytes(192))))


def speed_mbps(sock: socket.socket, ifname: str) -> int | None:
    buf = _ioctl(sock, ifname, bytearray(struct.pack("I", GSET) + bytes(40)))
    lo = struct.unpack_from("H", buf, 12)[0]
    hi = struct.unpack_from("H", buf, 28)[0]
    speed = lo | (hi << 16)
    return None if speed in (SPEED_UNKNOWN, 0xFFFF, 0) else speed


def channels(sock: socket.socket, ifname: str) -> dict[str, int]:
    buf = _ioctl(sock, ifname, bytearray(struct.pack("I", GCHANNELS) + bytes(32)))
    keys = ("max_rx", "max_tx", "max_other", "max_combined", "rx", "tx", "other", "combined")
    return dict(zip(keys, struct.unpack_from("8I", buf, 4), strict=True))


def offload(sock: socket.socket, ifname: str, cmd: int) -> bool:
    return bool(struct.unpack_from("I", _ioctl(sock, ifname, bytearray(struct.pack("II", cmd, 0))), 4)[0])


def offloads(sock: socket.socket, ifname: str) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for name, cmd in (("gro", GGRO), ("gso", GGSO), ("tso", GTSO)):
        try:
            out[name] = offload(sock, ifname, cmd)
        except OSError:
            out[name] = None
    return out
