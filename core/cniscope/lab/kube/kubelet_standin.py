"""The lab's kubelet stand-in: the API side of a kubelet for every lab node, nothing else.

Run as ``python -m cniscope.lab.kube.kubelet_standin <config.json>`` (the lab spawns it in the fabric
namespace). For each node, with that node's own ``system:node:<name>`` certificate — so the Node
authorizer and NodeRestriction admission judge it as they would judge a kubelet — it

* registers the Node (InternalIP = the lab node's address, podCIDR = its pod subnet, nodeInfo read
  from this host: kernel from uname, OS image from /etc/os-release, runtime ``lab://<version>``);
* renews the node's Lease in ``kube-node-lease`` every ``LEASE_RENEW`` seconds and posts its
  Ready/MemoryPressure/DiskPressure/PIDPressure conditions every ``STATUS_EVERY`` seconds;
* runs the pods bound to the node and reports them (:mod:`cniscope.lab.kube.pod_sync`): host-network
  pods get the node's address, others one of the node's lab pod addresses with a sandbox process in
  that pod namespace and the containers of the lab's image (:mod:`cniscope.lab.kube.runtime`);
  Ready follows their readiness probes;
* projects the pods' ServiceAccount tokens through the TokenRequest API (:mod:`cniscope.lab.kube.tokens`).

On SIGTERM the pods' processes are stopped with it.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cniscope.lab.kube.apiclient import ApiError, Client, microtime, name_path, rfc3339
from cniscope.lab.kube.pod_sync import PodSync
from cniscope.lab.kube.runtime import Runtime
from cniscope.lab.kube.tokens import TokenProjector

LEASE_SECONDS = 40
LEASE_RENEW = 10.0
STATUS_EVERY = 20.0
POD_POLL = 1.0
LEASE_NS = "kube-node-lease"


@dataclass
class NodeConf:
    name: str
    host_ip: str
    pod_cidr: str
    cert: str
    key: str
    pod_ips: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    pod_netns: dict[str, str] = field(default_factory=dict)   # lab pod IP -> its /run/netns path


def host_info(runtime_version: str, kubelet_version: str) -> dict[str, str]:
    """nodeInfo from this machine, as a kubelet would report it."""
    os_image = "Linux"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_image = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass

    def read(p: str) -> str:
        try:
            return Path(p).read_text().strip()
        except OSError:
            return ""

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "kernelVersion": os.uname().release,
        "osImage": os_image,
        "containerRuntimeVersion": f"lab://{runtime_version}",
        "kubeletVersion": kubelet_version,
        "kubeProxyVersion": kubelet_version,
        "operatingSystem": "linux",
        "architecture": arch,
        "machineID": read("/etc/machine-id"),
        "bootID": read("/proc/sys/kernel/random/boot_id"),
        "systemUUID": "",
    }


def capacity() -> dict[str, str]:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110",
            "ephemeral-storage": "10Gi"}


class NodeAgent:
    def __init__(self, conf: NodeConf, config: dict[str, Any], info: dict[str, str]) -> None:
        self.conf = conf
        ca = Path(config["ca"])
        self.api = Client(config["server"], ca=ca, cert=Path(conf.cert), key=Path(conf.key))
        self.info = {**info, "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{conf.name}.lab"))}
        self.started = rfc3339()
        self.runtime = Runtime(config.get("lab", "lab"), conf.name, Path(config.get("log_dir", "/tmp")))
        tokens = TokenProjector(self.api, conf.name, Path(config.get("token_dir", "/nonexistent")), ca)
        pod_netns = conf.pod_netns or {ip: "" for ip in conf.pod_ips}
        self.pods = PodSync(self.api, conf.name, conf.host_ip, pod_netns, self.runtime, tokens)
        self.next_status = 0.0
        self.next_lease = 0.0

    # ---- node ------------------------------------------------------------------------------
    def register(self) -> None:
        c = self.conf
        labels = {
            "kubernetes.io/hostname": c.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": self.info["architecture"],
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": self.info["architecture"],
            **c.labels,
        }
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": c.name, "labels": labels},
                "spec": {"podCIDR": c.pod_cidr, "podCIDRs": [c.pod_cidr]}}
        try:
            self.api.create("/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
        self.post_status()

    def status_doc(self) -> dict[str, Any]:
        now = rfc3339()
        conds = []
        for ctype, status, reason, msg in (
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "lab node has sufficient memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "lab node has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "lab node has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "cniscope lab node is posting ready status"),
        ):
            conds.append({"type": ctype, "status": status, "reason": reason, "message": msg,
                          "lastHeartbeatTime": now, "lastTransitionTime": self.started})
        cap = capacity()
        return {"status": {
            "conditions": conds,
            "addresses": [{"type": "InternalIP", "address": self.conf.host_ip},
                          {"type": "Hostname", "address": self.conf.name}],
            "nodeInfo": self.info,
            "capacity": cap,
            "allocatable": cap,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }}

    def post_status(self) -> None:
        self.api.merge_patch(f"/api/v1/nodes/{name_path(self.conf.name)}/status", self.status_doc())
        self.next_status = time.monotonic() + STATUS_EVERY

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"
        now = microtime()
        try:
            self.api.merge_patch(f"{path}/{name_path(self.conf.name)}",
                                 {"spec": {"holderIdentity": self.conf.name, "renewTime": now,
                                           "leaseDurationSeconds": LEASE_SECONDS}})
        except ApiError as exc:
            if exc.status != 404:
                raise
            node = self.api.get(f"/api/v1/nodes/{name_path(self.conf.name)}")
            self.api.create(path, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.conf.name, "namespace": LEASE_NS,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": self.conf.name,
                                                  "uid": node["metadata"]["uid"]}]},
                "spec": {"holderIdentity": self.conf.name, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": now},
            })
        self.next_lease = time.monotonic() + LEASE_RENEW

    # ---- loop ------------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.next_lease:
            self.renew_lease()
        if now >= self.next_status:
            self.post_status()
        self.pods.sync()


def run(config: dict[str, Any], stop: threading.Event) -> None:
    info = host_info(config.get("runtime_version", "0"), config["kubelet_version"])
    agents = [NodeAgent(NodeConf(**n), config, info) for n in config["nodes"]]
    pending = list(agents)
    while pending and not stop.is_set():      # the API server may still be starting
        for a in list(pending):
            try:
                a.register()
                a.renew_lease()
                pending.remove(a)
                print(f"registered node {a.conf.name} ({a.conf.host_ip}, podCIDR {a.conf.pod_cidr})",
                      flush=True)
            except (ApiError, OSError) as exc:
                print(f"node {a.conf.name}: registering: {exc}", flush=True)
        if pending:
            stop.wait(1.0)
    while not stop.is_set():
        for a in agents:
            try:
                a.tick()
            except (ApiError, OSError) as exc:
                print(f"node {a.conf.name}: {exc}", flush=True)
        stop.wait(POD_POLL)
    for a in agents:         # the pods' processes end with their kubelet
        a.runtime.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cniscope.lab.kube.kubelet_standin <config.json>", file=sys.stderr)
        return 2
    config = json.loads(Path(args[0]).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(config, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
