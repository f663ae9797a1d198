"""eBPF census: every map (id, name, type, sizes, live entries, memlock, pins) and every program
with its attach points (XDP per interface, tc/tcx, cgroup), through the bpf() syscall. Cilium's maps
are recognised by their kernel-truncated names and summarised per class with fill ratios."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cniscope.agent import bpf as bpfmod
from cniscope.agent import netlink as nl
from cniscope.agent.bpf import syscall as sc
from cniscope.agent.bpf.info import link_info, map_info, prog_info
from cniscope.agent.inspectors.unit import UnitResult, count
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import ParseError, Unavailable
from cniscope.core.hostpaths import HostPaths

# Cilium map names as the kernel keeps them (15 characters), by class. The service class is the
# service maps alone (frontends and backend slots: what programming N Services adds); the reverse-NAT
# maps (per Service, and per socket for the socket LB: both truncate to ``cilium_lb4_reve``) are their
# own class, whose per-socket entries follow connections rather than Services.
CILIUM_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("service", ("cilium_lb4_serv", "cilium_lb6_serv")),
    ("revnat", ("cilium_lb4_reve", "cilium_lb6_reve")),
    ("backend", ("cilium_lb4_back", "cilium_lb6_back")),
    ("conntrack", ("cilium_ct4_glob", "cilium_ct6_glob", "cilium_ct_any4_", "cilium_ct_any6_")),
    ("nat", ("cilium_snat_v4_", "cilium_snat_v6_")),
    ("ipcache", ("cilium_ipcache",)),
    ("policy", ("cilium_policy",)),
)
PIN_SCAN_LIMIT = 10_000


def cilium_class(name: str) -> str | None:
    for cls, prefixes in CILIUM_CLASSES:
        if name.startswith(prefixes):
            return cls
    return None


def pinned(roots: Iterable[Path], limit: int = PIN_SCAN_LIMIT) -> dict[tuple[str, int], list[str]]:
    """(kind, id) → pin paths, for every object pinned under the given bpffs roots."""
    out: dict[tuple[str, int], list[str]] = {}
    seen = 0
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, _, files in os.walk(root):
            for f in files:
                seen += 1
                if seen > limit:
                    return out
                path = os.path.join(dirpath, f)
                try:
                    with sc.obj_get(path) as fd:
                        info = sc.fdinfo(fd.fd)
                except OSError:
                    continue
                for kind in ("map", "prog", "link"):
                    if f"{kind}_id" in info:
                        out.setdefault((kind, int(info[f"{kind}_id"])), []).append(path)
                        break
    return out


def one_map(map_id: int, pins: dict[tuple[str, int], list[str]], method: str = "auto") -> cap.BpfMap:
    """One map's row. A map that vanished since it was listed gives an error row, nothing else."""
    try:
        fd = sc.map_fd_by_id(map_id)
    except sc.BpfError as exc:
        why = "vanished before it could be opened" if exc.errno == errno.ENOENT else str(exc)
        return cap.BpfMap(id=map_id, error=why)
    with fd:
        try:
            info = map_info(fd.fd)
            row = cap.BpfMap(id=info.id, name=info.name, type=info.type, key_size=info.key_size,
                             value_size=info.value_size, max_entries=info.max_entries, flags=info.flags)
            memlock = sc.fdinfo(fd.fd).get("memlock")
            if memlock and memlock.isdigit():
                row.memlock_bytes = int(memlock)
            t0 = time.perf_counter()
            c = bpfmod.count_entries(fd.fd, info, method=method)
            if c.entries is not None:
                row.entries = c.entries
            row.count_method, row.count_syscalls, row.count_note = c.method, c.syscalls, c.note
            row.count_seconds = round(time.perf_counter() - t0, 6)
        except OSError as exc:
            return cap.BpfMap(id=map_id, error=str(exc))
    if info.max_entries and c.entries is not None and c.method != "fixed":
        row.fill = round(c.entries / info.max_entries, 6)
    row.cilium_class = cilium_class(info.name) or ""
    row.pins.extend(pins.get(("map", info.id), []))
    return row


def map_census(ids: Iterable[int] | None = None, pin_roots: Iterable[Path] = ()) -> list[cap.BpfMap]:
    pins = pinned(pin_roots)
    return [one_map(i, pins) for i in (sc.map_ids() if ids is None else ids)]


def cilium_summary(maps: Iterable[cap.BpfMap]) -> dict[str, cap.CiliumMapClass]:
    """Cilium's counted maps summed per class, with the class's fill."""
    out: dict[str, cap.CiliumMapClass] = {}
    for m in maps:
        if not m.cilium_class or not m.HasField("entries"):
            continue
        s = out.setdefault(m.cilium_class, cap.CiliumMapClass())
        s.maps.append(m.name)
        s.entries += m.entries
        s.max_entries += m.max_entries
    for s in out.values():
        if s.max_entries:
            s.fill = round(s.entries / s.max_entries, 6)
    return out


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def parse_bpftool_net(text: str) -> list[cap.BpfAttachment]:
    """Attach points from ``bpftool net -j``: XDP, tc (cls_bpf), tcx/netkit when present."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"bpftool net -j: {exc}") from exc
    if not isinstance(data, list):
        raise ParseError("bpftool net -j: expected a JSON list")
    out: list[cap.BpfAttachment] = []
    for block in data:
        if not isinstance(block, dict):
            raise ParseError("bpftool net -j: expected objects in the list")
        for hook, rows in block.items():
            for r in rows if isinstance(rows, list) else []:
                if not isinstance(r, dict) or "id" not in r:
                    raise ParseError(f"bpftool net -j: {hook} entry without a program id: {r!r}")
                out.append(cap.BpfAttachment(prog_id=int(r["id"]), hook=hook, interface=r.get("devname") or "",
                                             ifindex=_opt_int(r.get("ifindex")),
                                             mode=r.get("mode") or r.get("kind") or "", source="bpftool"))
    return out


def parse_bpftool_cgroup_tree(text: str) -> list[cap.BpfAttachment]:
    """Cgroup attach points from ``bpftool cgroup tree -j`` (program attachments without links too)."""
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as exc:
        raise ParseError(f"bpftool cgroup tree -j: {exc}") from exc
    if not isinstance(data, list):
        raise ParseError("bpftool cgroup tree -j: expected a JSON list")
    out: list[cap.BpfAttachment] = []
    for cg in data:
        if not isinstance(cg, dict) or not isinstance(cg.get("programs"), list):
            raise ParseError(f"bpftool cgroup tree -j: cgroup entry without programs: {cg!r}")
        for p in cg["programs"]:
            if not isinstance(p, dict) or "id" not in p:
                raise ParseError(f"bpftool cgroup tree -j: program without an id: {p!r}")
            out.append(cap.BpfAttachment(prog_id=int(p["id"]), hook="cgroup", cgroup=cg.get("cgroup") or "",
                                         mode=p.get("attach_type") or "", flags=p.get("attach_flags") or "",
                                         source="bpftool"))
    return out


def _bpftool(argv: list[str], netns: str | None, notes: list[str]) -> str | None:
    if netns:
        argv = ["nsenter", f"--net={netns}", *argv]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"{' '.join(argv[-3:])}: {exc}")
        return None
    if r.returncode != 0:
        notes.append(f"{' '.join(argv[-3:])}: {r.stderr.strip()[:200]}")
        return None
    return r.stdout


def _ifindex(a: cap.BpfAttachment) -> int | None:
    return a.ifindex if a.HasField("ifindex") else None


def attachments(netns: str | None = None, cgroup_roots: Iterable[Path] = ()) -> tuple[list[cap.BpfAttachment], list[str]]:
    """Attach points from bpf links, rtnetlink IFLA_XDP and bpftool (tc cls_bpf filters, cgroup
    attachments made without links); plus notes on what could not be listed."""
    out: list[cap.BpfAttachment] = []
    notes: list[str] = []
    names: dict[int, str] = {}
    try:
        for link in nl.links(netns):
            names[link.index] = link.name
            for mode, pid in link.xdp_prog_ids.items():
                out.append(cap.BpfAttachment(prog_id=pid, hook="xdp", interface=link.name, ifindex=link.index,
                                             mode=mode, source="netlink"))
    except OSError as exc:
        notes.append(f"rtnetlink: {exc}")
    for lid in sc.link_ids():
        try:
            with sc.link_fd_by_id(lid) as fd:
                li = link_info(fd.fd)
        except OSError:
            continue  # detached since listed
        out.append(cap.BpfAttachment(prog_id=li.prog_id, hook=li.type, link_id=li.id, source="link",
                                     mode=li.attach_type or "", ifindex=li.ifindex, cgroup_id=li.cgroup_id,
                                     interface=names.get(li.ifindex, "") if li.ifindex is not None else ""))
    if not shutil.which("bpftool"):
        notes.append("bpftool not installed: tc (cls_bpf) and link-less cgroup attachments not listed")
        return out, notes
    have = {(a.prog_id, _ifindex(a)) for a in out}
    text = _bpftool(["bpftool", "net", "-j"], netns, notes)
    try:
        if text is not None:
            out += [a for a in parse_bpftool_net(text) if (a.prog_id, _ifindex(a)) not in have]
        for root in cgroup_roots:
            if not (root / "cgroup.controllers").exists():
                continue  # not a cgroup v2 hierarchy: programs attach only to cgroup v2
            text = _bpftool(["bpftool", "cgroup", "tree", str(root), "-j"], None, notes)
            for a in parse_bpftool_cgroup_tree(text or ""):
                linked = next((x for x in out if x.prog_id == a.prog_id and x.hook == "cgroup"
                               and x.mode == a.mode and not x.cgroup), None)
                if linked is not None:
                    linked.cgroup = a.cgroup
                else:
                    out.append(a)
    except ParseError as exc:
        notes.append(str(exc))
    return out, notes


def prog_census(pin_roots: Iterable[Path] = (), netns: str | None = None,
                cgroup_roots: Iterable[Path] = ()) -> tuple[list[cap.BpfProgram], list[str]]:
    pins = pinned(pin_roots)
    att, notes = attachments(netns, cgroup_roots)
    by_prog: dict[int, list[cap.BpfAttachment]] = {}
    for a in att:
        by_prog.setdefault(a.prog_id, []).append(a)
    rows: list[cap.BpfProgram] = []
    for pid in sc.prog_ids():
        try:
            with sc.prog_fd_by_id(pid) as fd:
                pi = prog_info(fd.fd)
        except OSError as exc:
            rows.append(cap.BpfProgram(id=pid, error=str(exc)))
            continue
        rows.append(cap.BpfProgram(id=pi.id, name=pi.name, type=pi.type, tag=pi.tag, maps=pi.map_ids_count,
                                   attached=by_prog.get(pi.id, []), pins=pins.get(("prog", pi.id), [])))
    return rows, notes


def summarize(d: cap.BpfDetail) -> str:
    """``212 maps, 96 programs (41 attached); Cilium 312 service entries, fullest conntrack 41%``."""
    attached = sum(1 for p in d.programs if p.attached)
    out = f"{count(len(d.maps), 'map')}, {count(len(d.programs), 'program')} ({attached} attached)"
    if not d.cilium:
        return out + "; no Cilium maps"
    parts = []
    if "service" in d.cilium:
        parts.append(f"{d.cilium['service'].entries:,} service entries")
    filled = [(c.fill, name) for name, c in d.cilium.items() if c.HasField("fill")]
    if filled:
        fill, name = max(filled)
        parts.append(f"fullest {name} {fill:.0%}")
    return out + "; Cilium " + ", ".join(parts or ["maps not counted"])


def own_cgroups(proc_self: Path = Path("/proc/self")) -> list[str]:
    """This process's cgroup v2 and its ancestors, innermost first, under the cgroup2 mount it sees."""
    try:
        mounts = (proc_self / "mounts").read_text().splitlines()
        rel = next((ln[3:] for ln in (proc_self / "cgroup").read_text().splitlines() if ln.startswith("0::")), None)
    except OSError:
        return []
    root = next((f[1] for f in (ln.split() for ln in mounts) if len(f) > 2 and f[2] == "cgroup2"), None)
    if root is None or rel is None:
        return []
    p = Path(root) / rel.strip("/")
    out = [str(p)]
    while str(p) != root and p != p.parent:
        p = p.parent
        out.append(str(p))
    return out


def inspect_bpf(paths: HostPaths, netns: str | None = None, extra_pin_roots: Iterable[Path] = ()) -> UnitResult:
    roots = [paths.sys_path("fs", "bpf"), *extra_pin_roots]
    try:
        map_ids = sc.map_ids()
    except sc.BpfError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            raise Unavailable(f"bpf() not permitted here ({exc.strerror}); needs CAP_BPF/CAP_SYS_ADMIN") from exc
        raise
    maps = map_census(map_ids, roots)
    progs, notes = prog_census(roots, netns, [paths.sys_path("fs", "cgroup"), paths.sys_path("fs", "cgroup", "unified")])
    d = cap.BpfDetail(maps=maps, programs=progs, cilium=cilium_summary(maps), notes=notes,
                      pin_roots=[str(r) for r in roots if r.is_dir()], own_cgroups=own_cgroups())
    return UnitResult(d, summarize(d))
