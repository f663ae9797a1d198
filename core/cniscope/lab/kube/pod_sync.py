"""The pod side of the kubelet stand-in, for one lab node.

Every ``POD_POLL`` seconds it lists the pods bound to its node and, for each:

* gives it an address — host-network pods the node's, others a free lab pod address of the node,
  kept for the pod's lifetime (a pod beyond the node's addresses stays Pending, with a condition
  saying so);
* runs it through :class:`cniscope.lab.kube.runtime.Runtime` (a sandbox in that address's pod
  namespace, the containers of the lab's image) unless it is host-network;
* judges readiness as a kubelet would from the containers' ``readinessProbe``: a ``tcpSocket`` or
  ``httpGet`` port must accept a connection made from inside the pod's namespace (the port is what is
  checked; the HTTP answer is not read); no probe means ready once running;
* posts the status (Running, podIP, Ready, container states) when it changed;
* projects ServiceAccount tokens (:mod:`cniscope.lab.kube.tokens`);
* for a pod being deleted, stops its processes and confirms the deletion (grace period 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cniscope.lab.kube.apiclient import ApiError, Client, name_path, rfc3339, socket_in_netns
from cniscope.lab.kube.runtime import LAB_IMAGE, Runtime
from cniscope.lab.kube.tokens import TokenProjector

PROBE_TIMEOUT = 1.0


def probe_ports(pod: Mapping[str, Any]) -> list[int]:
    """The ports of the containers' tcpSocket/httpGet readiness probes (named ports resolved)."""
    out = []
    for c in pod["spec"].get("containers", []):
        rp = c.get("readinessProbe") or {}
        handler = rp.get("tcpSocket") or rp.get("httpGet")
        if not handler:
            continue
        port = handler.get("port")
        if isinstance(port, str) and not port.isdigit():
            port = next((p["containerPort"] for p in c.get("ports", []) if p.get("name") == port), None)
        if port is not None:
            out.append(int(port))
    return out


class PodSync:
    def __init__(self, api: Client, node: str, host_ip: str, pod_netns: dict[str, str],
                 runtime: Runtime, tokens: TokenProjector) -> None:
        self.api, self.node, self.host_ip = api, node, host_ip
        self.pod_netns = pod_netns                 # lab pod IP -> its namespace (/run/netns path)
        self.runtime, self.tokens = runtime, tokens
        self.assigned: dict[str, str] = {}        # pod uid -> lab pod IP
        self.posted: dict[str, tuple[str, bool]] = {}   # pod uid -> (IP, ready) last posted

    def sync(self) -> None:
        pods = self.api.get("/api/v1/pods", query={"fieldSelector": f"spec.nodeName={self.node}"})["items"]
        live = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self.assigned if u not in live]:
            del self.assigned[uid]
        for uid in [u for u in self.posted if u not in live]:
            del self.posted[uid]
        for uid in self.runtime.uids() - live:
            self.runtime.stop(uid)
        for p in pods:   # addresses already given out survive a restart of the stand-in
            ip = p.get("status", {}).get("podIP")
            if ip and ip in self.pod_netns:
                self.assigned.setdefault(p["metadata"]["uid"], ip)
        running = []
        for p in pods:
            if p["metadata"].get("deletionTimestamp"):
                self.runtime.stop(p["metadata"]["uid"])
                self._finish_deleted(p)
            elif self._run(p):
                running.append(p)
        self.tokens.sync(running)

    def _finish_deleted(self, pod: dict[str, Any]) -> None:
        # a kubelet confirms deletion once containers are gone: here at once
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{name_path(ns)}/pods/{name_path(name)}",
                             {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": pod["metadata"]["uid"]}})
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    def _path(self, pod: Mapping[str, Any]) -> str:
        md = pod["metadata"]
        return f"/api/v1/namespaces/{name_path(md['namespace'])}/pods/{name_path(md['name'])}/status"

    def _run(self, pod: dict[str, Any]) -> bool:
        """Run the pod and post its status; False while it has no address."""
        uid, spec = pod["metadata"]["uid"], pod["spec"]
        status = pod.get("status", {})
        if status.get("phase") in ("Succeeded", "Failed"):
            return False
        if spec.get("hostNetwork"):
            ip, ready, exited = self.host_ip, True, []
        else:
            ip = self.assigned.get(uid) or next(
                (a for a in self.pod_netns if a not in self.assigned.values()), "")
            if not ip:
                self._no_address(pod)
                return False
            self.assigned[uid] = ip
            netns = Path(self.pod_netns[ip])
            if not self.runtime.running(uid):
                self.runtime.start(pod, netns, ip, self.host_ip)
            exited = self.runtime.exited(uid)
            ready = not exited and all(self._accepts(netns, ip, port) for port in probe_ports(pod))
        if self.posted.get(uid) == (ip, ready) and status.get("podIP") == ip and status.get("phase") == "Running":
            return True
        self.api.merge_patch(self._path(pod), {"status": self._status(pod, ip, ready, exited)})
        self.posted[uid] = (ip, ready)
        return True

    def _no_address(self, pod: dict[str, Any]) -> None:
        if any(c.get("reason") == "NoLabPodAddress" for c in pod.get("status", {}).get("conditions", [])):
            return   # already said so
        now = rfc3339()
        self.api.merge_patch(self._path(pod), {"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "NoLabPodAddress",
             "message": f"all {len(self.pod_netns)} lab pod addresses of {self.node} are in use",
             "lastTransitionTime": now}]}})

    @staticmethod
    def _accepts(netns: Path, ip: str, port: int) -> bool:
        try:
            socket_in_netns(netns, (ip, port), timeout=PROBE_TIMEOUT).close()
            return True
        except OSError:
            return False

    def _status(self, pod: dict[str, Any], ip: str, ready: bool, exited: list[str]) -> dict[str, Any]:
        uid, spec = pod["metadata"]["uid"], pod["spec"]
        now = rfc3339()
        started = pod.get("status", {}).get("startTime") or now
        run_here = not spec.get("hostNetwork")
        containers = []
        for c in spec.get("containers", []):
            lab_run = run_here and c.get("image") == LAB_IMAGE
            state: dict[str, Any] = {"running": {"startedAt": started}}
            if lab_run and exited:
                state = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": now}}
            containers.append({
                "name": c["name"], "image": c.get("image", ""), "imageID": "",
                "containerID": f"lab://{uid}/{c['name']}", "ready": ready, "restartCount": 0,
                "started": "running" in state, "state": state})
        conds = [{"type": t, "status": "True" if ready or t in ("PodReadyToStartContainers", "Initialized",
                                                                     "PodScheduled") else "False",
                  "lastTransitionTime": now}
                 for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        return {"phase": "Running", "conditions": conds, "hostIP": self.host_ip,
                "hostIPs": [{"ip": self.host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": started, "containerStatuses": containers, "qosClass": "BestEffort"}
