"""In Kubernetes, the pod paths start in this node's probe pod: find it, then follow it.

At start the agent looks up its node's probe pod through the API (its IP and network namespace fill
the config's pod address). Then, every ``probe_pod_recheck`` seconds, it checks that the pod is
still the same one; when it was replaced (a restart, a rollout) the pod paths are re-pointed and
``on_moved`` runs (re-serve the pod-side targets, reconnect so the collector learns the address).
In the lab, or with an explicit ``--pod-netns``, none of this runs and no Kubernetes code is loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cniscope.core.config import AgentConfig
from cniscope.core.errors import CniscopeError
from cniscope.core.hostpaths import HostPaths

if TYPE_CHECKING:  # the Kubernetes client is loaded only where there is an API
    from cniscope.agent.cluster_api import ClusterView

log = logging.getLogger("cniscope.agent")


class ProbePodLoop:
    def __init__(self, cfg: AgentConfig, paths: HostPaths, view: ClusterView, uid: str,
                 on_moved: Callable[[], Awaitable[None]]) -> None:
        self.cfg = cfg
        self.paths = paths
        self.view = view
        self.uid = uid
        self.on_moved = on_moved

    @classmethod
    async def discover(cls, cfg: AgentConfig, paths: HostPaths,
                       on_moved: Callable[[], Awaitable[None]]) -> ProbePodLoop | None:
        """The loop that follows this node's probe pod, after a first lookup that fills ``cfg``'s pod
        address (and its probe allow-list from the cluster's objects); None when there is no API to
        ask (the lab, ``--pod-netns``, no cluster)."""
        from cniscope.core import kubeapi

        if cfg.pod_netns or not kubeapi.wanted(cfg.kubernetes):
            return None
        from cniscope.agent import cluster_api

        try:
            view = await asyncio.to_thread(cluster_api.ClusterView.connect, cfg.kubernetes)
        except CniscopeError as exc:
            log.warning("no Kubernetes API for the probe pod: %s", exc)
            return None
        if view is None:
            return None
        await asyncio.to_thread(cluster_api.resolve_allow_list, cfg, view)
        uid = ""
        try:
            pod = await asyncio.to_thread(cluster_api.discover_probe_pod, cfg, paths, view, 30.0)
            uid = pod.uid if pod is not None else ""
        except CniscopeError as exc:  # keep the view: the loop tries again
            log.warning("no probe pod for the pod paths yet: %s", exc)
        return cls(cfg, paths, view, uid, on_moved)

    async def run(self) -> None:
        """Never ends the agent: an API hiccup is logged and retried next round."""
        from cniscope.agent import cluster_api

        while True:
            await asyncio.sleep(max(1.0, self.cfg.probe_pod_recheck))
            try:
                pod = await asyncio.to_thread(cluster_api.reconcile_probe_pod, self.cfg, self.paths, self.view,
                                              self.uid)
                if pod is None:
                    continue
                self.uid = pod.uid
                await self.on_moved()
            except Exception as exc:  # an API hiccup is logged and retried next round
                log.warning("probe pod check failed: %s", exc)
