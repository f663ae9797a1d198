"""``rtt``: ICMP echo round-trip time with ping (``-n -c COUNT -i INTERVAL -s SIZE -W TIMEOUT``).

Figures (stable names): ``transmitted``, ``received``, ``loss_pct``, and when any reply came back
``min_us``, ``p50_us``, ``p99_us``, ``max_us``, ``mean_us``, ``mdev_us`` (from the per-reply times,
duplicates counted once). 100 % loss is a failed result that still carries the counts. Results of the
background mesh carry ``mesh=true`` in their params and detail.
"""

from __future__ import annotations

import asyncio
import shutil

from cniscope.agent.probes.ping_parse import parse_ping
from cniscope.agent.probes.probe import Outcome, ProbeContext, run_tool
from cniscope.core.errors import ParseError


class RttProbe:
    async def run(self, ctx: ProbeContext) -> Outcome:
        ping = shutil.which("ping")
        if ping is None:
            return Outcome.failure("ping not found (install iputils-ping)")
        p = ctx.params
        count, interval, timeout = p.integer("count"), p.number("interval"), p.number("timeout")
        argv = [ping, "-n", "-c", str(count), "-i", f"{interval:g}", "-s", str(p.integer("size")),
                "-W", f"{timeout:g}", ctx.target_address]
        if ctx.netns:
            argv = ["nsenter", f"--net={ctx.netns}", "--", *argv]
        expected = count * interval + timeout + 5
        await ctx.report(0.0, f"ping {ctx.target_address} ×{count}")
        try:
            rc, out, err = await run_tool(argv, limit=expected)
        except TimeoutError:
            return Outcome.failure(f"ping did not finish within {expected:.0f}s")
        except asyncio.CancelledError:
            raise
        try:
            res = parse_ping(out)
        except ParseError as exc:
            msg = (err.strip().splitlines() or [str(exc)])[-1]
            return Outcome.failure(f"ping {ctx.target_address}: {msg}")
        figures = res.figures()
        if res.received == 0:
            return Outcome(ok=False, figures=figures, error=f"no reply from {ctx.target_address} (100% loss)")
        return Outcome(ok=True, figures=figures, detail={"rtts_us": list(res.rtts_us), "exit_code": rc})
