"""The continuous light mesh on this node: rtt to a hash-chosen, bounded subset of peers every
``mesh_interval`` seconds (which peers and when: :mod:`cniscope.agent.mesh_peers`).

The first round starts at a random point of the interval, so agents started together do not ping in
step; a probe is skipped while a bandwidth test touches this node (its RTT would describe the load,
not the network). Results are recorded like any probe's, marked as mesh measurements.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping

from cniscope.agent import mesh_peers
from cniscope.agent.probe_runner import ProbeRunner
from cniscope.api.v1 import common_pb2
from cniscope.core.config import AgentConfig
from cniscope.core.errors import CniscopeError

log = logging.getLogger("cniscope.agent")

STAGGER_JITTER = 0.2   # each probe's start moves by up to this fraction of its slot


class MeshLoop:
    def __init__(self, cfg: AgentConfig, seed: str, peers: Mapping[str, common_pb2.Peer], runner: ProbeRunner,
                 busy: Callable[[], bool]) -> None:
        """``cfg`` gives the node, interval and fanout, and whether the pod path is set up now;
        ``busy()`` is true while a bandwidth test touches this node."""
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.peers = peers
        self.runner = runner
        self.busy = busy

    async def run(self) -> None:
        interval = self.cfg.mesh_interval
        if interval <= 0:
            return
        await asyncio.sleep(self.rng.uniform(0, interval))
        while True:
            t0 = time.monotonic()
            chosen = mesh_peers.choose_peers(self.cfg.node, self.peers, self.cfg.mesh_fanout)
            starts = mesh_peers.offsets(len(chosen), interval, STAGGER_JITTER, self.rng)
            for peer, off in zip(chosen, starts, strict=True):
                delay = t0 + off - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if peer in self.peers and not self.busy():
                    await self.probe(peer)
            await asyncio.sleep(max(0.0, t0 + interval * self.rng.uniform(0.9, 1.1) - time.monotonic()))

    async def probe(self, peer: str) -> None:
        """One rtt to ``peer``: from the probe pod when both ends have one, else host to host."""
        has_pod = bool(self.cfg.pod_ip and self.cfg.pod_netns and self.peers[peer].pod_ip)
        req = common_pb2.ProbeRequest(probe_id=f"mesh-{uuid.uuid4().hex[:12]}", kind="rtt",
                                      source_node=self.cfg.node, target_node=peer, path="pod" if has_pod else "host",
                                      params=mesh_peers.MESH_PARAMS)
        try:
            ctx = self.runner.prepare(req)
        except CniscopeError as exc:
            log.debug("mesh rtt to %s skipped: %s", peer, exc)
            return
        ctx.mesh = True  # marks the stored result (params and detail) as a mesh measurement
        await self.runner.run(req, ctx)
