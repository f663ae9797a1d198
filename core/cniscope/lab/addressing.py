"""The lab's address plan, all inside the benchmarking range 198.18.0.0/15 (RFC 2544).

    198.18.0.0/24     fabric: bridge 198.18.0.2 (collector), node i at 198.18.0.(10+i)
    198.18.64.0/18    reserved ClusterIP range (Services); its last /24, 198.18.127.0/24, holds the
                      Services fronting each node's probe pod (node i at 198.18.127.i)
    198.19.i.0/24     pod subnet of node i; the node side is 198.19.i.1, pod j is 198.19.i.(10+j)

There is no default route anywhere: pods route 198.18.0.0/15 via their node, nodes route each
other's pod subnets via the fabric, and nothing leaves the lab.
"""

from __future__ import annotations

import ipaddress

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
FABRIC_NET = ipaddress.ip_network("198.18.0.0/24")
SERVICE_NET = ipaddress.ip_network("198.18.64.0/18")
FRONT_NET = ipaddress.ip_network("198.18.127.0/24")
COLLECTOR_IP = "198.18.0.2"
COLLECTOR_PORT = 7400
MAX_NODES = 200
MAX_PODS_PER_NODE = 50


def node_ip(i: int) -> str:
    _check_node(i)
    return f"198.18.0.{10 + i}"


def pod_subnet(i: int) -> str:
    _check_node(i)
    return f"198.19.{i}.0/24"


def pod_gateway(i: int) -> str:
    _check_node(i)
    return f"198.19.{i}.1"


def pod_ip(i: int, j: int = 1) -> str:
    _check_node(i)
    if not 1 <= j <= MAX_PODS_PER_NODE:
        raise ValueError(f"pod index {j} outside 1..{MAX_PODS_PER_NODE}")
    return f"198.19.{i}.{10 + j}"


def service_ip(n: int) -> str:
    """The n-th ClusterIP (0-based) of the reserved Service range."""
    hosts = int(FRONT_NET.network_address) - int(SERVICE_NET.network_address) - 10
    if not 0 <= n < hosts:
        raise ValueError(f"service index {n} outside 0..{hosts - 1}")
    return str(SERVICE_NET.network_address + 10 + n)


def front_ip(i: int) -> str:
    """The ClusterIP of the Service fronting node i's probe pod; planned Services stay below it."""
    _check_node(i)
    return f"198.18.127.{i}"


def _check_node(i: int) -> None:
    if not 1 <= i <= MAX_NODES:
        raise ValueError(f"node index {i} outside 1..{MAX_NODES}")
