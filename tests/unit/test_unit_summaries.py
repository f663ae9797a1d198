"""Each inspection unit states its findings in one line a person reads first; on findings built here,
each summary says exactly what they hold (the iptables census's own summaries are checked on recorded
tool output in test_iptables_census)."""

from __future__ import annotations

import pytest

from cniscope.agent import capabilities
from cniscope.agent.inspectors import (
    bpf,
    cluster,
    cni_processes,
    iptables,
    kernel,
    nic,
    privileges,
    readiness,
    tracer_readiness,
)
from cniscope.agent.inspectors.unit import NOT_READY, READY, UNKNOWN, Inspector, UnitResult
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import common_pb2
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths
from cniscope.core.registry import Registry


def test_kernel() -> None:
    assert kernel.summarize(cap.KernelDetail(release="6.18.44-fc-v595", btf=True, cgroup_v2=True, tracefs=True)) \
        == "kernel 6.18, BTF, cgroup v2, tracefs"
    assert kernel.summarize(cap.KernelDetail(release="5.4.0-1103-aws")) == \
        "kernel 5.4, no BTF, no cgroup v2, no tracefs"


def test_bpf() -> None:
    maps = [cap.BpfMap(name="cilium_lb4_serv", cilium_class="service", entries=1004, max_entries=65536),
            cap.BpfMap(name="cilium_ct4_glob", cilium_class="conntrack", entries=262144, max_entries=524288),
            cap.BpfMap(name="cilium_ipcache", cilium_class="ipcache", entries=37, max_entries=512000),
            cap.BpfMap(name="other", entries=1, max_entries=1)]
    progs = [cap.BpfProgram(id=1, attached=[cap.BpfAttachment(hook="tcx")]), cap.BpfProgram(id=2)]
    d = cap.BpfDetail(maps=maps, programs=progs, cilium=bpf.cilium_summary(maps))
    assert bpf.summarize(d) == "4 maps, 2 programs (1 attached); Cilium 1,004 service entries, fullest conntrack 50%"
    assert bpf.summarize(cap.BpfDetail(maps=maps[3:])) == "1 map, 0 programs (0 attached); no Cilium maps"


def test_nic() -> None:
    ens5 = cap.NicInterface(name="ens5", kind="physical", driver="ena", speed_mbps=25000, xdp_native=True,
                            xdp_mode="native")
    lo = cap.NicInterface(name="lo", kind="loopback", virtual=True, xdp_native=False)
    assert nic.summarize(cap.NicDetail(interfaces=[lo, ens5])) == \
        "2 interfaces, physical: ens5 (ena, 25,000 Mb/s); native XDP on ens5; XDP attached: ens5 native"
    eth0 = cap.NicInterface(name="eth0", kind="physical", driver="virtio_net", speed_error="no speed")
    assert nic.summarize(cap.NicDetail(interfaces=[eth0])) == \
        "1 interface, physical: eth0 (virtio_net, speed unknown); xdp-features not reported"
    veth = cap.NicInterface(name="p1", kind="veth", virtual=True, xdp_native=False)
    assert nic.summarize(cap.NicDetail(interfaces=[veth])) == "1 interface, none physical; no native XDP"


def test_iptables_kinds_of_census() -> None:
    legacy = cap.IptablesBackend(ran=True, rules=10_050, tables={"nat": cap.IptablesTable(rules=10_008),
                                                                  "filter": cap.IptablesTable(rules=42)})
    d = cap.IptablesDetail(iptables_legacy=legacy, iptables_nft=cap.IptablesBackend(unavailable="not installed"),
                           nft=cap.NftCensus(ran=True), kube_proxy=cap.KubeProxy(
                               mode="iptables", svc_chains=1000, sep_chains=3000,
                               metrics=cap.KubeProxyMetrics(syncs=4, sync_mean_ms=170.4)))
    assert iptables.summarize(d) == \
        "iptables-legacy 10,008 NAT rules + 42 other, kube-proxy iptables (1,000 services, 3,000 endpoints), sync 170 ms"
    nft = cap.IptablesDetail(nft=cap.NftCensus(ran=True, rules=412, kube_proxy=cap.NftKubeProxy(
        rules=400, service_chains=104, endpoint_chains=312)), kube_proxy=cap.KubeProxy(mode="nftables"))
    assert iptables.summarize(nft) == "nft 412 rules, kube-proxy nftables (104 services, 312 endpoints)"
    assert iptables.summarize(cap.IptablesDetail(kube_proxy=cap.KubeProxy(mode="none"))) == "no rules, kube-proxy none"


def test_cluster() -> None:
    d = cap.ClusterDetail(
        fingerprint=cap.DataPlaneFingerprint(cni="cilium", cni_version="1.16.5", kube_proxy="ebpf", routing="native",
                                             ipam="eni", tuning=["bbr", "bandwidth-manager"], source="kubernetes",
                                             scenario="E"),
        node=cap.NodeMeta(instance_type="m6i.xlarge", zone="us-east-1a"))
    assert cluster.summarize(d) == ("CNI cilium 1.16.5, kube-proxy ebpf, routing native, ipam eni, tuning bbr "
                                    "bandwidth-manager, scenario E, from the Kubernetes API; node m6i.xlarge us-east-1a")
    lab = cap.ClusterDetail(fingerprint=cap.DataPlaneFingerprint(cni="none", kube_proxy="unknown", routing="unknown",
                                                                 ipam="unknown", source="node"),
                            node_error="node 'n1' is not known to the API server")
    assert cluster.summarize(lab) == ("CNI none, kube-proxy unknown, routing unknown, ipam unknown, from this node "
                                      "(no Kubernetes API); node metadata: node 'n1' is not known to the API server")


def test_privileges() -> None:
    ok = cap.FeaturePrivilege(feature="iptables", needs=["NET_ADMIN"])
    lacking = cap.FeaturePrivilege(feature="tracers", needs=["BPF", "PERFMON"], missing=["BPF", "PERFMON"])
    assert privileges.summarize(cap.PrivilegesDetail(features=[ok])) == "all 1 features allowed"
    assert privileges.summarize(cap.PrivilegesDetail(features=[ok, lacking])) == \
        "1 of 2 features allowed; tracers missing CAP_BPF, CAP_PERFMON"


def test_readiness() -> None:
    items = [common_pb2.CapabilityItem(name=n, state=s) for n, s in
             (("bbr", NOT_READY), ("dsr", READY), ("netkit", READY), ("bandwidth_manager", NOT_READY),
              ("xdp_acceleration", UNKNOWN))]
    assert readiness.summarize(cap.ReadinessDetail(config_source="/proc/config.gz"), items) == \
        "2 ready, 2 not ready (bandwidth_manager, bbr), 1 unknown (xdp_acceleration); kernel config /proc/config.gz"
    assert readiness.summarize(cap.ReadinessDetail(), items[1:3]) == "2 ready; kernel config ?"


def test_cni_footprint() -> None:
    d = cap.CniFootprintDetail(processes=[cap.CniProcess(process="cilium-agent", pid=812, rss_bytes=180 * 2**20),
                                          cap.CniProcess(process="kube-proxy", pid=640, rss_bytes=41 * 2**20)])
    assert cni_processes.summarize(d) == "cilium-agent pid 812 rss 180 MiB, kube-proxy pid 640 rss 41 MiB"


def test_tracers() -> None:
    def t(name: str, why: str = "") -> cap.TracerReadiness:
        return cap.TracerReadiness(name=name, available=not why, reason=f"unavailable: {why}" if why else "")

    assert tracer_readiness.summarize(cap.TracersDetail(tracers=[t("tcpconnlat"), t("drops")])) == \
        "2 tracers can run (tcpconnlat, drops)"
    assert tracer_readiness.summarize(cap.TracersDetail(tracers=[t("tcpconnlat"), t("drops", "no skb:kfree_skb")])) \
        == "1 of 2 tracers can run (tcpconnlat): no skb:kfree_skb"
    assert tracer_readiness.summarize(cap.TracersDetail(tracers=[t("a", "no bcc"), t("b", "no bcc")])) == \
        "0 of 2 tracers can run: no bcc"


def test_the_report_carries_each_units_summary_and_typed_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """collect() files the typed findings under the unit's case and states the summary; a unit that
    does not apply or fails states why."""
    def ok(paths: HostPaths) -> UnitResult:
        d = cap.KernelDetail(release="6.18.1", btf=True)
        return UnitResult(d, kernel.summarize(d))

    def absent(paths: HostPaths) -> UnitResult:
        raise Unavailable("no CNI agent process")

    def broken(paths: HostPaths) -> UnitResult:
        raise OSError("boom")

    reg: Registry[Inspector] = Registry("inspector")
    for name, fn in (("kernel", ok), ("cni_footprint", absent), ("bpf", broken)):
        reg.register(name, fn)
    monkeypatch.setattr(capabilities, "INSPECTORS", reg)
    units = {u.name: u for u in capabilities.collect(HostPaths()).units}
    assert units["kernel"].WhichOneof("detail") == "kernel"
    assert units["kernel"].kernel.btf is True
    assert units["kernel"].summary == "kernel 6.18, BTF, no cgroup v2, no tracefs"
    assert units["cni_footprint"].summary == units["cni_footprint"].error == "unavailable: no CNI agent process"
    assert units["bpf"].summary == "OSError: boom"
    assert units["bpf"].WhichOneof("detail") is None
