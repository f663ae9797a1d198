"""bpf_{map,prog,link}_info as typed records, plus the kernel's type-name tables."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from cniscope.agent.bpf import syscall as sc

MAP_TYPES = [
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
    "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
    "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
    "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage", "devmap_hash",
    "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter", "user_ringbuf",
    "cgrp_storage", "arena",
]
PROG_TYPES = [
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp", "perf_event",
    "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops", "sk_skb", "cgroup_device",
    "sk_msg", "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local", "lirc_mode2", "sk_reuseport",
    "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable", "cgroup_sockopt", "tracing",
    "struct_ops", "ext", "lsm", "sk_lookup", "syscall", "netfilter",
]
LINK_TYPES = [
    "unspec", "raw_tracepoint", "tracing", "cgroup", "iter", "netns", "xdp", "perf_event",
    "kprobe_multi", "struct_ops", "netfilter", "tcx", "uprobe_multi", "netkit", "sockmap",
]
_ATTACH_NAMES = [
    "cgroup_inet_ingress", "cgroup_inet_egress", "cgroup_inet_sock_create", "cgroup_sock_ops",
    "sk_skb_stream_parser", "sk_skb_stream_verdict", "cgroup_device", "sk_msg_verdict", "cgroup_inet4_bind",
    "cgroup_inet6_bind", "cgroup_inet4_connect", "cgroup_inet6_connect", "cgroup_inet4_post_bind",
    "cgroup_inet6_post_bind", "cgroup_udp4_sendmsg", "cgroup_udp6_sendmsg", "lirc_mode2", "flow_dissector",
    "cgroup_sysctl", "cgroup_udp4_recvmsg", "cgroup_udp6_recvmsg", "cgroup_getsockopt", "cgroup_setsockopt",
    "trace_raw_tp", "trace_fentry", "trace_fexit", "modify_return", "lsm_mac", "trace_iter",
    "cgroup_inet4_getpeername", "cgroup_inet6_getpeername", "cgroup_inet4_getsockname",
    "cgroup_inet6_getsockname", "xdp_devmap", "cgroup_inet_sock_release", "xdp_cpumap", "sk_lookup", "xdp",
    "sk_skb_verdict", "sk_reuseport_select", "sk_reuseport_select_or_migrate", "perf_event",
    "trace_kprobe_multi", "lsm_cgroup", "struct_ops", "netfilter", "tcx_ingress", "tcx_egress",
    "trace_uprobe_multi", "cgroup_unix_connect", "cgroup_unix_sendmsg", "cgroup_unix_recvmsg",
    "cgroup_unix_getpeername", "cgroup_unix_getsockname", "netkit_primary", "netkit_peer",
    "trace_kprobe_session",
]
ATTACH_TYPES = dict(enumerate(_ATTACH_NAMES))  # enum bpf_attach_type
ARRAY_LIKE = {"array", "percpu_array", "prog_array", "perf_event_array", "cgroup_array", "array_of_maps",
              "devmap", "cpumap", "xskmap", "reuseport_sockarray"}
UNCOUNTABLE = {"ringbuf", "user_ringbuf", "queue", "stack", "bloom_filter", "stack_trace", "struct_ops",
               "cgroup_storage", "percpu_cgroup_storage", "sk_storage", "inode_storage", "task_storage",
               "cgrp_storage", "arena"}
PERCPU = {"percpu_hash", "lru_percpu_hash", "percpu_array", "percpu_cgroup_storage"}


def _name(table: list[str], i: int) -> str:
    return table[i] if 0 <= i < len(table) else f"type_{i}"


class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64)]


class _ProgInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
                ("gpl", ctypes.c_uint32)]


class _LinkInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("u", ctypes.c_uint32 * 12)]


@dataclass(frozen=True)
class MapInfo:
    id: int
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgInfo:
    id: int
    name: str
    type: str
    tag: str
    map_ids_count: int


@dataclass(frozen=True)
class LinkInfo:
    id: int
    type: str
    prog_id: int
    ifindex: int | None = None
    cgroup_id: int | None = None
    attach_type: str | None = None


def map_info(fd: int) -> MapInfo:
    i = _MapInfo()
    sc.obj_info(fd, i)
    return MapInfo(id=i.id, name=i.name.decode(errors="replace"), type=_name(MAP_TYPES, i.type),
                   key_size=i.key_size, value_size=i.value_size, max_entries=i.max_entries, flags=i.map_flags)


def prog_info(fd: int) -> ProgInfo:
    i = _ProgInfo()
    sc.obj_info(fd, i)
    return ProgInfo(id=i.id, name=i.name.decode(errors="replace"), type=_name(PROG_TYPES, i.type),
                    tag=bytes(i.tag).hex(), map_ids_count=i.nr_map_ids)


def link_info(fd: int) -> LinkInfo:
    i = _LinkInfo()
    sc.obj_info(fd, i)
    kind = _name(LINK_TYPES, i.type)
    u = list(i.u)
    if kind == "xdp":
        return LinkInfo(i.id, kind, i.prog_id, ifindex=u[0], attach_type="xdp")
    if kind in ("tcx", "netkit"):
        return LinkInfo(i.id, kind, i.prog_id, ifindex=u[0], attach_type=ATTACH_TYPES.get(u[1], str(u[1])))
    if kind == "cgroup":
        return LinkInfo(i.id, kind, i.prog_id, cgroup_id=u[0] | (u[1] << 32),
                        attach_type=ATTACH_TYPES.get(u[2], str(u[2])))
    return LinkInfo(i.id, kind, i.prog_id)


def possible_cpus(sys_root: str = "/sys") -> int:
    """Number of possible CPUs (per-CPU map values are this many 8-byte-aligned slots)."""
    try:
        with open(f"{sys_root}/devices/system/cpu/possible") as f:
            return parse_cpu_list(f.read())
    except OSError:
        return os.cpu_count() or 1


def parse_cpu_list(text: str) -> int:
    n = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        n += (int(hi) - int(lo) + 1) if hi else 1
    return n
