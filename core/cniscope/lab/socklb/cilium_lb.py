"""Cilium's socket-LB maps as the lab programs them: names, byte layouts (Cilium's ``bpf/lib/lb.h``)
and the entries N Services make.

A Service with K backends is K+1 entries of ``cilium_lb4_services_v2``: its frontend
(``backend_slot`` 0, ``count`` = K) and one slot per backend (``backend_slot`` 1..K, holding a
backend id); ``cilium_lb4_backends_v3`` maps each backend id to its address and port once, however
many Services share it; ``cilium_lb4_reverse_nat`` maps the Service's ``rev_nat_index`` back to its
address. Addresses and ports are in network byte order, every other field in host order, as the
programs (``sock_lb.bpf.c``) read them.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cniscope.lab.kubeproxy import Service

SERVICES_MAP = "cilium_lb4_services_v2"
BACKENDS_MAP = "cilium_lb4_backends_v3"
REVNAT_MAP = "cilium_lb4_reverse_nat"
REVERSE_SK_MAP = "cilium_lb4_reverse_sk"
SCOPE_MAP = "cniscope_labns"
MAPS = (SERVICES_MAP, BACKENDS_MAP, REVNAT_MAP, REVERSE_SK_MAP, SCOPE_MAP)
KEY_SIZE = {SERVICES_MAP: 12, BACKENDS_MAP: 4, REVNAT_MAP: 2, REVERSE_SK_MAP: 16, SCOPE_MAP: 8}
VALUE_SIZE = {SERVICES_MAP: 12, BACKENDS_MAP: 12, REVNAT_MAP: 8, REVERSE_SK_MAP: 8, SCOPE_MAP: 1}
MAX_ENTRIES = 65536  # LB_MAP_MAX in sock_lb.bpf.c, Cilium's default for the service and backend maps

# program → enum bpf_attach_type
PROGRAMS = (("sock4_connect", 10), ("sock4_sendmsg", 14), ("sock4_recvmsg", 19), ("sock4_getpeername", 29))
PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "any": 0}


def kernel_name(name: str) -> str:
    """The name as the kernel keeps it (BPF_OBJ_NAME_LEN - 1 = 15 characters)."""
    return name[:15]


def lb4_key(address: str, port: int, slot: int = 0, proto: int = socket.IPPROTO_TCP) -> bytes:
    return socket.inet_aton(address) + struct.pack("!H", port) + struct.pack("<HBB2x", slot, proto, 0)


def lb4_service(backend_id: int = 0, count: int = 0, rev_nat_index: int = 0) -> bytes:
    return struct.pack("<IHHBBH", backend_id, count, rev_nat_index, 0, 0, 0)


def lb4_backend(address: str, port: int, proto: int = 0) -> bytes:
    return socket.inet_aton(address) + struct.pack("!H", port) + struct.pack("<BBHBB", proto, 0, 0, 0, 0)


def revnat_key(rev_nat_index: int) -> bytes:
    return struct.pack("<H", rev_nat_index)


def revnat_value(address: str, port: int) -> bytes:
    return socket.inet_aton(address) + struct.pack("!H", port) + b"\0\0"


@dataclass(frozen=True)
class Lb4Key:
    address: str
    port: int
    slot: int
    proto: int

    @classmethod
    def unpack(cls, raw: bytes) -> Lb4Key:
        (port,) = struct.unpack("!H", raw[4:6])
        slot, proto, _ = struct.unpack("<HBB", raw[6:10])
        return cls(socket.inet_ntoa(raw[:4]), port, slot, proto)


@dataclass(frozen=True)
class Lb4Service:
    backend_id: int
    count: int
    rev_nat_index: int

    @classmethod
    def unpack(cls, raw: bytes) -> Lb4Service:
        bid, count, rev, *_ = struct.unpack("<IHHBBH", raw[:12])
        return cls(bid, count, rev)


def unpack_backend(raw: bytes) -> tuple[str, int]:
    return socket.inet_ntoa(raw[:4]), struct.unpack("!H", raw[4:6])[0]


@dataclass(frozen=True)
class Entries:
    """Packed (key, value) pairs per map, in the order they must be written: backends before the
    slots that name them, slots before their frontend, so a program never finds a frontend whose
    slots are missing. Deletion runs the other way round."""

    backends: list[tuple[bytes, bytes]]
    slots: list[tuple[bytes, bytes]]
    frontends: list[tuple[bytes, bytes]]
    revnat: list[tuple[bytes, bytes]]

    @property
    def service_entries(self) -> int:
        return len(self.slots) + len(self.frontends)


def backend_ids(services: Iterable[Service], first_id: int = 1) -> dict[tuple[str, int], int]:
    """One id per distinct backend (address, port), numbered in the order the Services name them."""
    out: dict[tuple[str, int], int] = {}
    for svc in services:
        for ep in svc.endpoints:
            out.setdefault((ep, svc.target_port), first_id + len(out))
    return out


def rev_nat_index(svc: Service) -> int:
    """Service ``i`` of a plan is reverse-NAT index ``i + 1`` (0 is "none" in Cilium)."""
    return svc.index + 1


def entries(services: Sequence[Service], ids: dict[tuple[str, int], int]) -> Entries:
    """Everything ``services`` put into the maps; every backend must have an id in ``ids``."""
    backends = [(struct.pack("<I", bid), lb4_backend(addr, port)) for (addr, port), bid in ids.items()]
    slots: list[tuple[bytes, bytes]] = []
    fronts: list[tuple[bytes, bytes]] = []
    rev: list[tuple[bytes, bytes]] = []
    for svc in services:
        proto, idx = PROTO[svc.protocol], rev_nat_index(svc)
        for k, ep in enumerate(svc.endpoints, start=1):
            slots.append((lb4_key(svc.cluster_ip, svc.port, k, proto),
                          lb4_service(ids[(ep, svc.target_port)], 0, idx)))
        fronts.append((lb4_key(svc.cluster_ip, svc.port, 0, proto), lb4_service(0, len(svc.endpoints), idx)))
        rev.append((revnat_key(idx), revnat_value(svc.cluster_ip, svc.port)))
    return Entries(backends, slots, fronts, rev)
