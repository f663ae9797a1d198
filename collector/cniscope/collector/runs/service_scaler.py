"""Services for a service-scaling run, created and garbage-collected by label.

Every Service made here carries ``app.kubernetes.io/managed-by=cniscope``; :meth:`ServiceScaler.delete_all`
lists by that label and deletes only what it finds, so nothing else in the namespace is touched. They
select the probe pods (whose ``cniscope probe-pod`` process accepts on 7421), so the data plane
programs real backends for each one (4 → 104 → 1000 …).
Blocking calls: run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cniscope.core import kubeapi
from cniscope.core.config import CollectorConfig
from cniscope.core.errors import Unavailable

# A cleanup sends DELETE_WORKERS deletes at a time (well under the API server's default of 200
# mutating requests in flight) and stops after CLEANUP_SECONDS.
DELETE_WORKERS = 16
CLEANUP_SECONDS = 45.0
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_SELECTOR = f"{MANAGED_BY}=cniscope"
PROBE_SELECTOR = {"app.kubernetes.io/name": "cniscope-probe"}


class ServiceScaler:
    def __init__(self, namespace: str = "cniscope-probe", api_client: Any = None, *,
                 prefix: str = "cniscope-scale", port: int = 7411, target_port: int = 7421) -> None:
        from kubernetes import client

        self.namespace, self.prefix, self.port, self.target_port = namespace, prefix, port, target_port
        self.core = client.CoreV1Api(api_client if api_client is not None else kubeapi.api_client())

    @classmethod
    def from_config(cls, cfg: CollectorConfig) -> ServiceScaler:
        """The scaler for ``cfg.scaling_namespace`` (CNISCOPE_SCALING_NAMESPACE), using $KUBECONFIG or
        the pod's service account; raises Unavailable where there is no API server (the lab)."""
        return cls(cfg.scaling_namespace, kubeapi.api_client())

    def service_body(self, index: int, run: str = "") -> dict[str, Any]:
        labels = {MANAGED_BY: "cniscope", "cniscope.io/role": "scaling"}
        if run:
            labels["cniscope.io/run"] = run
        return {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{self.prefix}-{index:05d}", "namespace": self.namespace, "labels": labels},
            "spec": {"type": "ClusterIP", "selector": dict(PROBE_SELECTOR),
                     "ports": [{"name": "accept", "port": self.port, "targetPort": self.target_port, "protocol": "TCP"}]},
        }

    def list_names(self) -> list[str]:
        listed = kubeapi.call(self.core.list_namespaced_service, self.namespace, label_selector=MANAGED_SELECTOR,
                           what=f"list services in {self.namespace}")
        return sorted(i["metadata"]["name"] for i in (listed or {}).get("items", []))

    def create_services(self, n: int, run: str = "") -> list[str]:
        """Make sure ``n`` managed Services exist (creating only the missing ones); return their names."""
        if n < 0:
            raise ValueError("n must be >= 0")
        have = set(self.list_names())
        names = []
        for i in range(n):
            body = self.service_body(i, run)
            name = body["metadata"]["name"]
            if name not in have:
                kubeapi.call(self.core.create_namespaced_service, self.namespace, body,
                          what=f"create service {self.namespace}/{name}")
            names.append(name)
        return names

    def scale_to(self, n: int, run: str = "") -> list[str]:
        """Make exactly ``n`` managed Services exist (create the missing, delete the extra)."""
        names = self.create_services(n, run)
        keep = set(names)
        for name in self.list_names():
            if name not in keep:
                kubeapi.call(self.core.delete_namespaced_service, name, self.namespace,
                          what=f"delete service {self.namespace}/{name}")
        return names

    def cluster_ip(self, name: str) -> str:
        obj = kubeapi.call(self.core.read_namespaced_service, name, self.namespace,
                        what=f"get service {self.namespace}/{name}")
        if obj is None:
            raise Unavailable(f"service {self.namespace}/{name} does not exist")
        return str(obj.get("spec", {}).get("clusterIP", ""))

    def wait_ready(self, name: str, timeout: float = 60.0, poll: float = 0.5,
                   stop: Callable[[], bool] | None = None) -> float:
        """Seconds until an EndpointSlice of ``name`` lists a ready endpoint (the data plane can then
        program it); raises Unavailable after ``timeout``. ``stop()`` true ends the wait early
        (returns the seconds waited so far)."""
        from kubernetes import client

        disc = client.DiscoveryV1Api(self.core.api_client)
        t0 = time.monotonic()
        while True:
            listed = kubeapi.call(disc.list_namespaced_endpoint_slice, self.namespace,
                               label_selector=f"kubernetes.io/service-name={name}",
                               what=f"list endpointslices in {self.namespace}")
            for sl in (listed or {}).get("items", []):
                for ep in sl.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready", True):
                        return time.monotonic() - t0
            if stop is not None and stop():
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise Unavailable(f"service {self.namespace}/{name} has no ready endpoint after {timeout:.0f}s")
            time.sleep(poll)

    def delete_all(self, budget: float = CLEANUP_SECONDS) -> int:
        """Delete every Service labelled managed-by=cniscope in the namespace, DELETE_WORKERS at a time;
        return how many. After ``budget`` seconds the rest is left (and named): the next run's start
        deletes it by the same label. The collector's terminationGracePeriodSeconds is longer than
        CLEANUP_SECONDS, so a rollout does not cut a cleanup short."""
        from concurrent.futures import ThreadPoolExecutor, wait

        names = self.list_names()
        if not names:
            return 0

        def delete(name: str) -> None:
            kubeapi.call(self.core.delete_namespaced_service, name, self.namespace,
                         what=f"delete service {self.namespace}/{name}")

        pool = ThreadPoolExecutor(max_workers=min(DELETE_WORKERS, len(names)), thread_name_prefix="svc-delete")
        try:
            futures = {pool.submit(delete, n): n for n in names}
            done, pending = wait(futures, timeout=budget)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        for f in done:
            f.result()                       # the first refusal (403, admission) is the error
        if pending:
            raise Unavailable(f"deleted {len(done)} of {len(names)} Services in {self.namespace} within "
                              f"{budget:g}s; the rest is deleted by label at the next run's start")
        return len(names)


def delete_leftovers(cfg: CollectorConfig, log: Any) -> int:
    """At the collector's start: delete the labelled Services a previous collector left behind (it was
    killed mid-run, or its cleanup ran out of time). Where there is no API server (the lab) or the
    cleanup is refused, say so and go on: a leftover never stops the collector from starting."""
    try:
        scaler = ServiceScaler.from_config(cfg)
        deleted = scaler.delete_all()
    except Exception as exc:  # never fatal: the next scaling run deletes by the same label
        log.warning("leftover scaling Services in %s not deleted at start: %s", cfg.scaling_namespace, exc)
        return 0
    if deleted:
        log.info("deleted %d leftover scaling Services in %s", deleted, cfg.scaling_namespace)
    return deleted
