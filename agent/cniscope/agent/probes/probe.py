"""What every probe module provides, and the context the agent hands it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from cniscope.core.params import ParamValues

Progress = Callable[[float, str], Awaitable[None]]


@dataclass
class ProbeContext:
    probe_id: str
    kind: str
    source_node: str
    target_node: str
    target_address: str        # resolved and already checked against peers/allow-list
    path: str                  # host | pod | service
    params: ParamValues        # parsed and bounded by the kind's row in the probe table
    netns: str = ""            # namespace path to originate from ("" = the agent's own)
    target_port: int = 0       # the target agent's accept port (connect/http)
    iperf_port: int = 0
    progress: Progress | None = None
    started_ns: int = field(default_factory=time.time_ns)
    mesh: bool = False         # a background mesh measurement, not a requested probe

    def result_params(self) -> dict[str, str]:
        """The parameters as the result carries them; a mesh measurement says so (``mesh=true``)."""
        return {**self.params.to_wire(), **({"mesh": "true"} if self.mesh else {})}

    async def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            await self.progress(fraction, message)


@dataclass
class Outcome:
    """A probe's findings. ``ok=False`` carries the error; figures stay empty rather than zeroed."""

    ok: bool
    figures: dict[str, float] = field(default_factory=dict)
    detail: dict[str, object] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def failure(cls, error: str, **detail: object) -> Outcome:
        return cls(ok=False, error=error, detail=dict(detail))


class Probe(Protocol):
    """Runs one kind; registered in ``cniscope.agent.probes`` under the kind's name in the probe table."""

    async def run(self, ctx: ProbeContext) -> Outcome: ...


async def run_tool(argv: list[str], limit: float) -> tuple[int, str, str]:
    """Run an external tool without blocking the loop; kill it (by its own PID) on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except (TimeoutError, asyncio.CancelledError):
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


@contextlib.asynccontextmanager
async def ticking(ctx: ProbeContext, seconds: float, label: str, every: float = 1.0) -> AsyncIterator[None]:
    """Report elapsed/expected progress while a tool that prints only at the end runs."""
    async def tick() -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(every)
            elapsed = time.monotonic() - t0
            await ctx.report(min(0.99, elapsed / seconds) if seconds > 0 else 0.5,
                             f"{label}: {elapsed:.0f}/{seconds:.0f}s")

    await ctx.report(0.0, label)
    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def in_netns(argv: list[str], netns: str) -> list[str]:
    """Prefix ``argv`` so the tool runs in ``netns`` (nsenter execs, so the PID stays the tool's)."""
    return ["nsenter", f"--net={netns}", "--", *argv] if netns else argv
