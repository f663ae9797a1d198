"""The process of the probe pod (daemonset/base/probe-daemonset.yaml): unprivileged, in the pod
network, serving the pod-side light targets itself — TCP accept-and-close on ``port`` and HTTP echo
on ``port + 1`` (also its liveness endpoint) — so the Services of a scaling run have real backends
whether or not an agent is up. Bandwidth targets (one-off iperf3 servers) are started in this pod's
network namespace by the node's agent, per test, so nothing listens between tests.
"""

from __future__ import annotations

import asyncio
import logging

from cniscope.agent.targets import listeners

log = logging.getLogger("cniscope.probe_pod")


async def serve(address: str = "0.0.0.0", port: int = 7421, ready: asyncio.Event | None = None) -> None:
    ls = await listeners.start([(address, "")], port)
    if ls.failed:
        await ls.close()
        raise OSError("cannot serve: " + "; ".join(ls.failed))
    log.info("probe pod serving %s", ", ".join(ls.bound))
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await ls.close()
