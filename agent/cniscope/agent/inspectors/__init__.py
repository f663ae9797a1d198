"""Inspector registry: one module per unit."""

from __future__ import annotations

from cniscope.agent.inspectors.base import Inspector
from cniscope.agent.inspectors.kernel import inspect_kernel
from cniscope.core.registry import Registry

INSPECTORS: Registry[Inspector] = Registry("inspector")
INSPECTORS.register("kernel", inspect_kernel)
