"""The agent's capability report: collected at start, refreshed on the collector's request.

A refresh runs in a worker thread, so the stream keeps being read while a unit runs. Requests while
one runs are answered by one more collection after it, never two at once; and each request still
unanswered after ``budget`` seconds gets what has finished so far (an unfinished report naming the
unit still running).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable

from cniscope.agent import capabilities
from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.core.hostpaths import HostPaths

log = logging.getLogger("cniscope.agent")
_libc = ctypes.CDLL(None)


def collect(paths: HostPaths, progress: capabilities.Progress) -> common_pb2.CapabilityReport:
    """One collection (blocking: run it in a worker thread), then the heap it freed is handed back
    to the system: the units' tool output and parse trees are transient, and an idle agent should
    not keep their peak resident (malloc keeps freed memory for reuse unless asked)."""
    report = capabilities.collect(paths, progress=progress)
    trim = getattr(_libc, "malloc_trim", None)   # glibc's; other C libraries return memory by themselves
    if trim is not None:
        trim(0)
    return report


class CapabilityRefresh:
    def __init__(self, paths: HostPaths, budget: float, post: Callable[[agent_pb2.AgentMessage], None]) -> None:
        self.paths = paths
        self.budget = budget
        self.post = post
        self.report: common_pb2.CapabilityReport | None = None   # the latest complete report
        self.last_progress: capabilities.Progress | None = None  # how the latest report was collected
        self.task: asyncio.Task[None] | None = None
        self._again = False
        self._watchdogs: set[asyncio.Task[None]] = set()
        self._collecting: capabilities.Progress | None = None
        self._answered_at = 0.0

    async def collect_first(self) -> None:
        """The report the first Hello carries (in a worker thread)."""
        progress = capabilities.Progress()
        self.report = await asyncio.to_thread(collect, self.paths, progress)
        self.last_progress = progress

    def request(self) -> None:
        """Collect a fresh report in the background and post it; see the module's docstring."""
        watchdog = asyncio.create_task(self._answer_within_budget(time.monotonic()))
        self._watchdogs.add(watchdog)
        watchdog.add_done_callback(self._watchdogs.discard)
        if self.task is not None and not self.task.done():
            self._again = True
            return
        self.task = asyncio.create_task(self._refresh_loop(), name="capabilities")

    def tasks(self) -> list[asyncio.Task[None]]:
        """What runs in the background now (for shutdown)."""
        return [*([self.task] if self.task is not None else []), *self._watchdogs]

    async def _refresh_loop(self) -> None:
        while True:
            self._again = False
            progress = self._collecting = capabilities.Progress()
            try:
                report = await asyncio.to_thread(collect, self.paths, progress)
            except Exception as exc:  # a refresh that fails leaves the last report standing
                log.warning("capability refresh failed: %s", exc)
            else:
                self.report, self.last_progress = report, progress
                self._post_report(report)
            finally:
                self._collecting = None
            if not self._again:
                return

    async def _answer_within_budget(self, asked: float) -> None:
        await asyncio.sleep(max(0.0, self.budget))
        progress = self._collecting
        if self._answered_at >= asked or progress is None:
            return
        part = capabilities.unfinished(progress, self.last_progress)
        log.warning("capability refresh: unit %s still running after %.1fs; sending the units that finished",
                    part.unfinished.running or "?", part.unfinished.running_seconds)
        self._post_report(part)

    def _post_report(self, report: common_pb2.CapabilityReport) -> None:
        self._answered_at = time.monotonic()
        self.post(agent_pb2.AgentMessage(capabilities=report))
