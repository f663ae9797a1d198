"""The lab's wiring, made inside its namespaces: the fabric bridge (the collector's address), one
veth per node into it, one veth per pod behind its node, and routes — pods reach 198.18.0.0/15 via
their node, nodes reach each other's pod subnets via the fabric, and there is no default route.
Every step is idempotent, so a half-built lab is completed by building it again."""

from __future__ import annotations

from collections.abc import Sequence

from cniscope.lab import addressing as addr
from cniscope.lab import netns
from cniscope.lab.lab_node import LabNode


def build(fabric: str, namespaces: Sequence[str], nodes: Sequence[LabNode]) -> None:
    for name in namespaces:
        netns.add(name)
    cmds = ["link set lo up"]
    if "br0" not in netns.exec_in(fabric, ["ip", "-o", "link", "show"]):
        cmds += ["link add br0 type bridge", f"addr add {addr.COLLECTOR_IP}/24 dev br0"]
    cmds += ["link set br0 up"]
    netns.batch(fabric, cmds)
    netns.sysctl(fabric, "net.bridge.bridge-nf-call-iptables", "0")
    netns.sysctl(fabric, "net.bridge.bridge-nf-call-ip6tables", "0")
    netns.sysctl(fabric, "net.ipv6.conf.all.disable_ipv6", "1")
    for node in nodes:
        build_node(fabric, node, nodes)


def build_node(fabric: str, node: LabNode, nodes: Sequence[LabNode]) -> None:
    """Node I: eth0 on the fabric (whose end there is named ``nI``), its pods behind ``p1..pN``."""
    ns, i = node.netns, node.index
    existing = netns.exec_in(ns, ["ip", "-o", "link", "show"])
    cmds = ["link set lo up"]
    if "eth0" not in existing:
        # both ends are created here: eth0 in the node, the fabric port straight in the fabric
        cmds.append(f"link add eth0 type veth peer name n{i} netns {fabric}")
    cmds += [f"addr replace {node.host_ip}/24 dev eth0", "link set eth0 up"]
    for j, pod in enumerate(node.pods, start=1):
        if f" p{j}@" not in existing and f" p{j}:" not in existing:
            cmds.append(f"link add p{j} type veth peer name eth0 netns {pod['netns']}")
        cmds += [
            f"addr replace {addr.pod_gateway(i)}/32 dev p{j}",
            f"link set p{j} up",
            f"route replace {pod['ip']}/32 dev p{j}",
        ]
    for other in nodes:
        if other.index != i:
            cmds.append(f"route replace {addr.pod_subnet(other.index)} via {other.host_ip} dev eth0")
    netns.batch(ns, cmds)
    netns.sysctl(ns, "net.ipv4.ip_forward", "1")
    netns.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
    netns.batch(fabric, [f"link set n{i} master br0", f"link set n{i} up"])
    for pod in node.pods:
        netns.batch(pod["netns"], [
            "link set lo up",
            f"addr replace {pod['ip']}/32 dev eth0",
            "link set eth0 up",
            f"route replace {addr.pod_gateway(i)} dev eth0 scope link",
            f"route replace {addr.LAB_RANGE} via {addr.pod_gateway(i)} dev eth0",
        ])
        netns.sysctl(pod["netns"], "net.ipv6.conf.all.disable_ipv6", "1")
        # ping from inside a pod without CAP_NET_RAW, as a real pod can
        netns.sysctl(pod["netns"], "net.ipv4.ping_group_range", "0 2147483647")
