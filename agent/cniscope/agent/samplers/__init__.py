"""Sampler registry."""

from __future__ import annotations

from collections.abc import Callable

from cniscope.agent.samplers.agent_self import AgentSelfSampler
from cniscope.agent.samplers.cni_footprint import CniFootprintSampler
from cniscope.agent.samplers.sampler import Sampler
from cniscope.agent.samplers.tracer_counters import TracerSampler
from cniscope.core.registry import Registry

SAMPLERS: Registry[Callable[[], Sampler]] = Registry("sampler")
SAMPLERS.register("agent_self", AgentSelfSampler)
SAMPLERS.register("cni_footprint", CniFootprintSampler)
SAMPLERS.register("tracers", TracerSampler)
