"""eBPF census against real maps: Cilium's names and sizes, exact entry counts, pins, vanishing maps."""

from __future__ import annotations

import ipaddress
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from bpfhelpers import private_bpffs  # type: ignore[import-not-found]  # noqa: E402

from cniscope.agent.bpf import count_entries  # noqa: E402
from cniscope.agent.bpf import syscall as sc  # noqa: E402
from cniscope.agent.bpf.info import map_info  # noqa: E402
from cniscope.agent.inspectors.bpf import cilium_summary, inspect_bpf, map_census  # noqa: E402
from cniscope.api.v1 import capabilities_pb2 as cap  # noqa: E402
from cniscope.core.hostpaths import HostPaths  # noqa: E402

pytestmark = pytest.mark.bpf

HASH, PERCPU_HASH, LRU_HASH, LPM_TRIE = 1, 5, 9, 11
NO_PREALLOC = 1

# name given at creation, kernel name, type, key, value, max_entries, entries to insert
SPECS = [
    ("cilium_lb4_services_v2", "cilium_lb4_serv", HASH, 12, 12, 65536, 104),
    ("cilium_lb4_backends_v3", "cilium_lb4_back", HASH, 4, 12, 65536, 312),
    ("cilium_ct4_global", "cilium_ct4_glob", LRU_HASH, 14, 56, 65536, 1000),
    ("cilium_ct_any4_global", "cilium_ct_any4_", LRU_HASH, 14, 56, 32768, 250),
    ("cilium_snat_v4_external", "cilium_snat_v4_", LRU_HASH, 14, 16, 65536, 500),
    ("cilium_ipcache", "cilium_ipcache", LPM_TRIE, 24, 16, 512000, 37),
    ("cilium_policy_00412", "cilium_policy_0", HASH, 12, 24, 16384, 23),
    ("cilium_metrics", "cilium_metrics", PERCPU_HASH, 8, 16, 1024, 7),
]


def _key(mtype: int, size: int, i: int) -> bytes:
    if mtype == LPM_TRIE:  # struct bpf_lpm_trie_key: prefixlen + data (family, pad, address)
        ip = ipaddress.IPv4Address("10.0.0.0") + (i << 8)
        return struct.pack("<I", 32 + 8 * 4) + bytes([0, 0, 0, 2]) + ip.packed + bytes(12)
    return struct.pack("<I", i + 1).ljust(size, b"\x5a")


@pytest.fixture
def cilium_maps() -> Iterator[dict[str, tuple[sc.Fd, int]]]:
    """Maps with Cilium's names, types and sizes, each filled with a known number of entries."""
    made: dict[str, tuple[sc.Fd, int]] = {}
    try:
        for full, short, mtype, ks, vs, mx, n in SPECS:
            fd = sc.map_create(mtype, ks, vs, mx, full, flags=NO_PREALLOC if mtype == LPM_TRIE else 0)
            made[short] = (fd, n)
            info = map_info(fd.fd)
            stride = ((vs + 7) // 8) * 8 * sc_possible() if mtype == PERCPU_HASH else vs
            for i in range(n):
                sc.map_update(fd.fd, _key(mtype, ks, i), bytes(stride))
            assert info.name == short
        yield made
    finally:
        for fd, _ in made.values():
            fd.close()


def sc_possible() -> int:
    from cniscope.agent.bpf.info import possible_cpus

    return possible_cpus()


def _ids(maps: dict[str, tuple[sc.Fd, int]]) -> dict[int, tuple[str, int]]:
    return {map_info(fd.fd).id: (name, n) for name, (fd, n) in maps.items()}


def test_census_finds_cilium_maps_by_truncated_name_and_counts_exactly(
        cilium_maps: dict[str, tuple[sc.Fd, int]]) -> None:
    ids = _ids(cilium_maps)
    res = inspect_bpf(HostPaths())
    assert isinstance(res.detail, cap.BpfDetail)
    rows = {r.id: r for r in res.detail.maps if r.id in ids}
    assert set(rows) == set(ids)
    for mid, (name, n) in ids.items():
        r = rows[mid]
        assert r.name == name
        assert r.HasField("entries"), r
        assert r.entries == n, r
        assert r.memlock_bytes > 0
        assert r.fill == pytest.approx(n / r.max_entries, abs=1e-6)
    by_name = {r.name: r for r in rows.values()}
    assert by_name["cilium_ct4_glob"].type == "lru_hash"
    assert by_name["cilium_ipcache"].type == "lpm_trie"
    assert by_name["cilium_metrics"].type == "percpu_hash"
    assert by_name["cilium_metrics"].cilium_class == ""
    summary = cilium_summary(rows.values())
    assert summary["conntrack"].entries == 1250
    assert summary["conntrack"].max_entries == 65536 + 32768
    assert summary["service"].fill == pytest.approx(104 / 65536, abs=1e-6)
    assert summary["backend"].entries == 312
    assert summary["nat"].entries == 500
    assert summary["ipcache"].entries == 37
    assert list(summary["policy"].maps) == ["cilium_policy_0"]
    assert "; Cilium 104 service entries, fullest " in res.summary


def test_batched_count_agrees_with_walk_and_costs_one_call_per_chunk() -> None:
    n = 10_000
    with sc.map_create(HASH, 4, 8, 16384, "cns_count") as fd:
        keys = b"".join(struct.pack("<I", i) for i in range(n))
        assert sc.map_update_batch(fd.fd, keys, bytes(8 * n), n) == n
        info = map_info(fd.fd)
        batch = count_entries(fd.fd, info, method="batch")
        walk = count_entries(fd.fd, info, method="walk")
    assert batch.entries == walk.entries == n
    assert batch.method == "batch"
    assert batch.syscalls <= n // 4096 + 2
    assert walk.syscalls == n + 1


def test_vanished_map_is_that_maps_error_only(cilium_maps: dict[str, tuple[sc.Fd, int]]) -> None:
    gone = sc.map_create(HASH, 4, 4, 8, "cns_gone")
    gone_id = map_info(gone.fd).id
    gone.close()
    keep = map_info(cilium_maps["cilium_lb4_back"][0].fd).id
    rows = map_census([gone_id, keep])
    assert rows[0] == cap.BpfMap(id=gone_id, error="vanished before it could be opened")
    assert rows[1].entries == 312


def test_pinned_paths_are_reported(tmp_path: Path, cilium_maps: dict[str, tuple[sc.Fd, int]]) -> None:
    fd, _ = cilium_maps["cilium_ipcache"]
    with private_bpffs(tmp_path / "bpffs") as root:
        (root / "tc" / "globals").mkdir(parents=True)
        pin = root / "tc" / "globals" / "cilium_ipcache"
        sc.obj_pin(fd.fd, str(pin))
        mid = map_info(fd.fd).id
        rows = {r.id: r for r in map_census(pin_roots=[root])}
        assert list(rows[mid].pins) == [str(pin)]
        with sc.obj_get(str(pin)) as again:
            assert map_info(again.fd).id == mid
