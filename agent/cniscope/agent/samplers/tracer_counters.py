"""Runs the configured bcc tracers and turns their counters into samples every interval.

Settings (env, like every cniscope setting): ``CNISCOPE_TRACERS`` — comma-separated tracer names
(default none: tracers cost a compile and are opt-in); ``CNISCOPE_TRACER_NETNS`` — a network
namespace file to filter on (a lab node's /run/netns/NAME), default all namespaces. A tracer that
cannot run here is logged once with its reason and left out; the agent runs on. Each tracer's state
is also kept in :mod:`cniscope.agent.tracers.live`, where probes find it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from cniscope.agent.tracers import TRACERS, live
from cniscope.agent.tracers.bcc_tracer import BccTracer
from cniscope.api.v1 import common_pb2
from cniscope.core.config import AgentConfig, env_value
from cniscope.core.errors import ConfigError, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TracerSettings:
    names: tuple[str, ...] = ()
    netns: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TracerSettings:
        e = os.environ if env is None else env
        names = tuple(n.strip() for n in env_value(AgentConfig, "tracers", e).split(",") if n.strip())
        unknown = [n for n in names if n not in TRACERS]
        if unknown:
            raise ConfigError(f"CNISCOPE_TRACERS: unknown tracer(s) {', '.join(unknown)}; "
                              f"known: {', '.join(TRACERS.names())}")
        return cls(names=names, netns=env_value(AgentConfig, "tracer_netns", e) or None)


class TracerSampler:
    """Tracers compile for several seconds, so they start in a background thread on the first
    sample; until then (and for tracers that cannot run) the sampler contributes nothing."""

    name = "tracers"

    def __init__(self, settings: TracerSettings | None = None) -> None:
        self.settings = settings or TracerSettings.from_env()
        self.running: list[BccTracer] = []
        self.unavailable: dict[str, str] = {}
        self._lock = threading.Lock()
        self._starter: threading.Thread | None = None
        self._closed = False

    def _start_all(self) -> None:
        for n in self.settings.names:
            tracer = TRACERS.get(n)(self.settings.netns)
            live.starting(n)
            try:
                tracer.start()
            except Unavailable as exc:
                self.unavailable[n] = f"unavailable: {exc}"
                live.failed(n, str(exc))
                log.warning("tracer %s %s", n, self.unavailable[n])
                continue
            with self._lock:
                if self._closed:
                    tracer.stop()
                    return
                self.running.append(tracer)
            live.started(tracer)

    def start(self) -> threading.Thread | None:
        if self._starter is None and self.settings.names:
            for n in self.settings.names:
                live.configured(n)
            self._starter = threading.Thread(target=self._start_all, name="tracer-start", daemon=True)
            self._starter.start()
        return self._starter

    def sample(self, now_ns: int) -> list[common_pb2.Sample]:
        self.start()
        with self._lock:
            tracers = list(self.running)
        out: list[common_pb2.Sample] = []
        for t in tracers:
            for s in t.samples(now_ns):
                s.labels["tracer"] = t.name
                out.append(s)
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            tracers, self.running = self.running, []
        for t in tracers:
            live.stopped(t)
            t.stop()
