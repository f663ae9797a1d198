"""A database written while capability findings travelled as JSON (``UnitReport`` field 6, schema 2)
is converted when the store opens it: every stored report, the latest per node and the one in each
node's Hello, reads as typed findings, and the JSON is gone."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from google.protobuf.unknown_fields import UnknownFieldSet

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.collector.capability_migration import typed_detail
from cniscope.collector.runs.run_fingerprint import census_nat_rules, derive
from cniscope.collector.store import SCHEMA, SCHEMA_VERSION, Store

# What agents sent before typed findings, as recorded from a 3-node lab (trimmed).
OLD_UNITS: dict[str, Any] = {
    "iptables": {"errors": [], "iptables-legacy": {"unavailable": "iptables-legacy-save not installed"},
                 "iptables-nft": {"kube": {"ipvs": False, "sep_chains": 12, "services_rules": 5, "svc_chains": 4},
                                  "rules": 49, "tables": {"nat": {"chains": {
                                      "KUBE-SERVICES": 5, "KUBE-SEP-*": {"chains": 12, "rules": 24}},
                                      "rules": 48, "user_chains": 20}}, "warnings": []},
                 "kube_proxy": {"backend": "iptables-nft", "evidence": "KUBE-SERVICES chain in the iptables-nft nat table",
                                "metrics": {"unavailable": "kube-proxy metrics at 127.0.0.1:10249 not reachable"},
                                "mode": "iptables", "nat_rules": 48, "sep_chains": 12, "services_rules": 5,
                                "svc_chains": 4},
                 "nft": {"kube_proxy": None, "rules": 4, "tables": {"ip cniscope-dns": {
                     "chains": 2, "family": "ip", "hooks": {"output": "nat output -100"}, "name": "cniscope-dns",
                     "rules": 4, "rules_by_chain": {"output": 2, "prerouting": 2}, "sets": {}}}, "version": "1.0.6"}},
    "nic": {"interfaces": [
        {"driver": None, "driver_error": "Operation not supported", "ifindex": 1, "kind": "loopback", "mtu": 65536,
         "name": "lo", "offloads": {"gro": True, "gso": None}, "speed": "virtual", "xdp_native": False,
         "xdp_prog_ids": {}},
        {"driver": "ena", "ifindex": 2, "kind": "physical", "mtu": 9001, "name": "ens5", "speed": "25000Mb/s",
         "xdp_native": True, "xdp_features": ["basic"], "xdp_mode": "native", "xdp_prog_ids": {"native": 31}}]},
    "cluster": {"fingerprint": {"cni": "none", "cni_version": "", "ipam": "unknown", "kube_proxy": "none",
                                "notes": ["no Kubernetes API"], "routing": "unknown", "scenario": None,
                                "source": "node", "tuning": []}},
    "privileges": {"effective": ["BPF", "NET_ADMIN"],
                   "features": {"bpf": "missing CAP_SYS_ADMIN", "iptables": "ok",
                                "tracers": "missing CAP_BPF, CAP_PERFMON"}},
    "tracers": {"drops": {"available": False, "events": ["skb/kfree_skb"], "reason": "unavailable: no bcc"},
                "tcpconnlat": {"available": True, "events": ["sock/inet_sock_set_state"]}},
    "bpf": {"cilium": {"service": {"entries": 104, "fill": 0.0016, "max_entries": 65536, "maps": ["cilium_lb4_serv"]}},
            "map_count": 1, "maps": [{"id": 7, "name": "cilium_lb4_serv", "type": "hash", "entries": 104,
                                      "max_entries": 65536, "memlock_bytes": None, "pins": []}],
            "notes": [], "programs": [], "prog_count": 0},
    "future_unit": {"anything": 1},   # a unit with no typed message: kept, without findings
}


def legacy_unit(name: str, detail_json: str, **kw: Any) -> bytes:
    """A UnitReport as an old agent serialised it: the typed fields of then, plus field 6 (JSON)."""
    raw = json.dumps(detail_json).encode() if not isinstance(detail_json, str) else detail_json.encode()
    head = common_pb2.UnitReport(name=name, duration_seconds=0.01, **kw).SerializeToString()
    return head + b"\x32" + _varint(len(raw)) + raw


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def old_report() -> common_pb2.CapabilityReport:
    rep = common_pb2.CapabilityReport(kernel="6.18.44", time_unix_nano=1_700_000_000_000_000_000)
    for name, doc in OLD_UNITS.items():
        rep.units.add().MergeFromString(legacy_unit(name, json.dumps(doc), ok=True, available=True))
    rep.units.add().MergeFromString(legacy_unit("kernel", "{not json", ok=True, available=True))
    rep.units.add(name="cni_footprint", ok=True, available=False, error="unavailable: no CNI agent process")
    rep.items.add(name="bbr", state=common_pb2.READINESS_READY, reason="ok")
    return rep


def old_database(path: Path) -> None:
    c = sqlite3.connect(path)
    c.executescript(SCHEMA)
    c.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    rep = old_report()
    hello = agent_pb2.Hello(node="node1", boot_id="b1", host_ip="198.18.0.11", pod_ip="198.19.1.11", capabilities=rep)
    c.execute("INSERT INTO nodes VALUES ('node1','b1','0.1','198.18.0.11','198.19.1.11',?,1,2)",
              (hello.SerializeToString(),))
    c.execute("INSERT INTO capabilities VALUES ('node1','b1',?,3)", (rep.SerializeToString(),))
    c.commit()
    c.close()


def assert_typed(rep: common_pb2.CapabilityReport) -> None:
    units = {u.name: u for u in rep.units}
    assert all(len(UnknownFieldSet(u)) == 0 for u in rep.units), "the JSON findings were left behind"
    for name in ("iptables", "nic", "cluster", "privileges", "tracers", "bpf"):
        assert units[name].WhichOneof("detail") == name, name
    ipt = units["iptables"].iptables
    assert ipt.iptables_nft.ran
    assert not ipt.iptables_legacy.ran
    assert ipt.iptables_legacy.unavailable == "iptables-legacy-save not installed"
    assert ipt.iptables_nft.tables["nat"].chains["KUBE-SEP-*"].folded == 12
    assert ipt.iptables_nft.tables["nat"].chains["KUBE-SERVICES"].rules == 5
    assert ipt.nft.tables["ip cniscope-dns"].rules_by_chain["output"].rules == 2
    assert not ipt.nft.HasField("kube_proxy")
    assert ipt.kube_proxy.nat_rules == 48
    assert "not reachable" in ipt.kube_proxy.metrics.unavailable
    lo, ens5 = units["nic"].nic.interfaces
    assert lo.virtual
    assert not lo.HasField("speed_mbps")
    assert dict(lo.offloads) == {"gro": True}
    assert (ens5.speed_mbps, ens5.xdp_native, dict(ens5.xdp_prog_ids)) == (25000, True, {"native": 31})
    feats = {f.feature: list(f.missing) for f in units["privileges"].privileges.features}
    assert feats == {"bpf": ["SYS_ADMIN"], "iptables": [], "tracers": ["BPF", "PERFMON"]}
    tracers = {t.name: t for t in units["tracers"].tracers.tracers}
    assert not tracers["drops"].available
    assert tracers["tcpconnlat"].available
    assert units["bpf"].bpf.cilium["service"].entries == 104
    assert not units["bpf"].bpf.maps[0].HasField("memlock_bytes")
    assert units["cluster"].cluster.fingerprint.scenario == ""
    # no typed message, or JSON that never parsed: the unit stays, without findings
    assert units["future_unit"].WhichOneof("detail") is None
    assert units["future_unit"].ok
    assert units["kernel"].WhichOneof("detail") is None
    assert units["cni_footprint"].summary == "unavailable: no CNI agent process"


def test_schema_2_database_is_converted_on_open(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old_database(db)
    st = Store(db)
    assert st.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    rep = st.latest_capabilities()["node1"]
    assert_typed(rep)
    assert rep.kernel == "6.18.44"
    assert [i.name for i in rep.items] == ["bbr"]
    (hello,) = st.known_nodes()
    assert_typed(hello.capabilities)
    # readers read the converted findings
    assert census_nat_rules(rep) == (48.0, "iptables-nft")
    st.close()
    again = Store(db)  # opening a converted database again changes nothing it holds
    assert again.latest_capabilities()["node1"] == rep
    again.close()


def test_fingerprint_of_a_converted_report() -> None:
    from cniscope.api.v1 import cluster_pb2
    from cniscope.collector.capability_migration import convert_report

    rep = old_report()
    assert convert_report(rep) is True
    assert convert_report(rep) is False   # nothing left to convert
    fp = derive({"node1": cluster_pb2.NodeState(node="node1", host_ip="198.18.0.11", pod_ip="198.19.1.11",
                                                capabilities=rep)})
    assert (fp["cni"], fp["kube_proxy"], fp["environment"]) == ("none", "iptables (rules seen)", "lab: netns, iptables-nft")


def test_findings_that_do_not_fit_are_dropped_not_guessed() -> None:
    assert typed_detail("kernel", {"release": "6.18", "btf": "yes"}) is None   # a string where a bool belongs
    assert typed_detail("kernel", ["not", "an", "object"]) is None
    assert typed_detail("no_such_unit", {}) is None
    k = typed_detail("kernel", {"release": "6.18", "btf": True, "retired_key": 1})
    assert k == cap.KernelDetail(release="6.18", btf=True)
