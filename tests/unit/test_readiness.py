"""Kernel readiness: the pure evaluation on constructed facts, and the real report on this machine."""

from __future__ import annotations

import gzip
import platform
from dataclasses import replace
from pathlib import Path

import pytest

from cniscope.agent.inspectors import readiness as R
from cniscope.agent.inspectors.unit import NOT_READY, READY
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.hostpaths import HostPaths

GOOD_CONFIG = {k: "y" for k in (
    "CONFIG_BPF_SYSCALL", "CONFIG_NET_CLS_BPF", "CONFIG_NET_SCH_INGRESS", "CONFIG_CGROUP_BPF",
    "CONFIG_NET_SCH_FQ", "CONFIG_NETKIT", "CONFIG_KPROBES")}


def facts(**kw: object) -> R.Facts:
    base = R.Facts(release="6.8.0-1-aws", version=(6, 8), config=dict(GOOD_CONFIG), config_source="test",
                   cgroup2=True, cgroup2_mounts=["/sys/fs/cgroup"], congestion=["reno", "cubic", "bbr"],
                   kprobe_events=True, tracefs=True,
                   nics=[cap.ReadinessNic(name="ens5", driver="ena", xdp_native=True, xdp_features=["basic"])],
                   probe={"veth": (0, ""), "fq": (0, ""), "bbr": (0, "")})
    return replace(base, **kw)  # type: ignore[arg-type]


def states(f: R.Facts) -> dict[str, tuple[str, str]]:
    return {n: (R.NAMES[s], r) for n, s, r in R.evaluate(f)}


def test_modern_node_is_ready_everywhere() -> None:
    s = states(facts())
    assert {k: v[0] for k, v in s.items()} == {k: "ready" for k in (
        "bpf_host_routing", "socket_lb", "bpf_masquerade", "bandwidth_manager", "bbr", "native_routing",
        "xdp_acceleration", "dsr", "netkit", "kube_proxy_replacement", "kprobes")}


def test_missing_fq_blocks_bandwidth_manager_and_bbr() -> None:
    cfg = dict(GOOD_CONFIG)
    del cfg["CONFIG_NET_SCH_FQ"]
    s = states(facts(config=cfg, probe={"veth": (0, ""), "fq": (2, "Error: Specified qdisc kind is unknown."),
                                        "bbr": (0, "")}))
    assert s["bandwidth_manager"][0] == "not ready"
    assert "fq" in s["bandwidth_manager"][1]
    assert "CONFIG_NET_SCH_FQ is not set" in s["bandwidth_manager"][1]
    assert s["bbr"][0] == "not ready"
    assert "fq" in s["bbr"][1]


def test_old_kernel_and_no_config() -> None:
    s = states(facts(release="5.8.0", version=(5, 8), config=None, config_source="no config",
                     probe={}, kprobe_events=False))
    assert s["bpf_host_routing"][0] == "not ready"
    assert "< 5.10" in s["bpf_host_routing"][1]
    assert s["netkit"][0] == "not ready"
    assert s["kube_proxy_replacement"][0] == "unknown"
    assert "no config" in s["kube_proxy_replacement"][1]
    assert s["bandwidth_manager"][0] == "unknown"
    assert s["kprobes"][0] == "not ready"


def test_nic_without_native_xdp_and_no_nic() -> None:
    s = states(facts(nics=[cap.ReadinessNic(name="eth0", driver="xen", xdp_native=False)]))
    assert s["xdp_acceleration"][0] == "not ready"
    assert states(facts(nics=[]))["xdp_acceleration"][0] == "not ready"
    unk = states(facts(nics=[cap.ReadinessNic(name="eth0", driver="x")]))
    assert unk["xdp_acceleration"][0] == "unknown"


def test_no_cgroup2_blocks_socket_lb_and_kpr() -> None:
    s = states(facts(cgroup2=False, cgroup2_mounts=[]))
    assert s["socket_lb"][0] == "not ready"
    assert s["kube_proxy_replacement"][0] == "not ready"


def test_config_read_from_host_roots(tmp_path: Path) -> None:
    proc = tmp_path / "host" / "proc"
    proc.mkdir(parents=True)
    (tmp_path / "host" / "boot").mkdir()
    (tmp_path / "host" / "boot" / f"config-{platform.release()}").write_text(
        "CONFIG_NET_SCH_FQ=y\n# CONFIG_NETKIT is not set\n")
    cfg, src = R.read_config(HostPaths(proc=proc), platform.release())
    assert cfg == {"CONFIG_NET_SCH_FQ": "y"}
    assert src.endswith(f"config-{platform.release()}")
    (proc / "config.gz").write_bytes(gzip.compress(b"CONFIG_KPROBES=y\n"))
    assert R.read_config(HostPaths(proc=proc), "x")[0] == {"CONFIG_KPROBES": "y"}
    (proc / "config.gz").unlink()
    assert R.read_config(HostPaths(proc=proc), "nope")[0] is None


@pytest.mark.netns
def test_this_machine_names_missing_fq_and_absent_kprobes() -> None:
    """Against ground truth read independently: sch_fq and kprobes from the kernel's own config and
    tracefs (on the build machine both are absent, so the reasons must name them)."""
    cfg, _ = R.read_config(HostPaths(), platform.release())
    assert cfg is not None, "this kernel exposes no config; the readiness report would be mostly unknown"
    fq_built = cfg.get("CONFIG_NET_SCH_FQ") == "y"
    kprobes = Path("/sys/kernel/tracing/kprobe_events").exists()
    res = R.inspect_readiness(HostPaths())
    items = {i.name: i for i in res.items}
    assert isinstance(res.detail, cap.ReadinessDetail)
    assert res.detail.probe["veth"].rc == 0
    assert (res.detail.probe["fq"].rc == 0) is fq_built
    if not fq_built:
        assert items["bandwidth_manager"].state == NOT_READY
        assert "fq qdisc missing" in items["bandwidth_manager"].reason
        assert "Specified qdisc kind is unknown" in items["bandwidth_manager"].reason
        assert "fq" in items["bbr"].reason
    else:
        assert items["bandwidth_manager"].state == READY
    if not kprobes:
        assert items["kprobes"].state == NOT_READY
        assert "kprobes absent" in items["kprobes"].reason
    assert len(items) == 11
