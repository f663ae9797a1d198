"""A lab's fingerprint names its Service datapath: ``ebpf socket-lb`` exactly when the agent's census
sees a connect4 program attached to the agent's own cgroup or an ancestor of it — not one attached to
another lab's cgroup on the same machine."""

from __future__ import annotations

from pathlib import Path

from cniscope.agent.inspectors.bpf import own_cgroups
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.collector.runs.run_fingerprint import derive, socket_lb

ROOT = "/sys/fs/cgroup/unified"
MINE = f"{ROOT}/cniscope-lab/a/processes"


def test_own_cgroups_are_the_agents_and_its_ancestors(tmp_path: Path) -> None:
    (tmp_path / "mounts").write_text(f"cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 {ROOT} cgroup2 rw 0 0\n")
    (tmp_path / "cgroup").write_text("4:memory:/x\n0::/cniscope-lab/a/processes\n")
    assert own_cgroups(tmp_path) == [MINE, f"{ROOT}/cniscope-lab/a", f"{ROOT}/cniscope-lab", ROOT]
    (tmp_path / "cgroup").write_text("0::/\n")
    assert own_cgroups(tmp_path) == [ROOT]
    (tmp_path / "mounts").write_text("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n")
    assert own_cgroups(tmp_path) == []


def node(attached_to: str, mode: str = "cgroup_inet4_connect") -> cluster_pb2.NodeState:
    bpf = cap.BpfDetail(own_cgroups=[MINE, f"{ROOT}/cniscope-lab/a", f"{ROOT}/cniscope-lab", ROOT], programs=[
        cap.BpfProgram(id=7, name="sock4_connect", attached=[
            cap.BpfAttachment(prog_id=7, hook="cgroup", mode=mode, cgroup=attached_to, link_id=3, source="link")])])
    rep = common_pb2.CapabilityReport(units=[common_pb2.UnitReport(name="bpf", ok=True, available=True, bpf=bpf)])
    st = cluster_pb2.NodeState(node="node1", host_ip="198.18.0.11", pod_ip="198.19.1.11")
    st.capabilities.CopyFrom(rep)
    return st


def test_the_lab_fingerprint_names_the_socket_lb_that_applies_to_it() -> None:
    on = node(f"{ROOT}/cniscope-lab/a")
    assert socket_lb(on.capabilities)
    assert derive({"node1": on})["environment"] == "lab: netns, ebpf socket-lb"
    other_lab = node(f"{ROOT}/cniscope-lab/b")
    assert not socket_lb(other_lab.capabilities)
    assert derive({"node1": other_lab})["environment"] == "lab: netns, iptables-nft"
    assert not socket_lb(node(f"{ROOT}/cniscope-lab/a", mode="cgroup_inet4_bind").capabilities)
    assert socket_lb(node(ROOT).capabilities)   # attached at the hierarchy's root, as Cilium does
