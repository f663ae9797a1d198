"""``tcp``: TCP throughput with the iperf3 client (``-J``) against the target agent's one-off server.

Figures (stable names): ``sent_gbps``, ``received_gbps`` (what the receiving end counted),
``retransmits``, ``sender_mean_rtt_us`` (byte-weighted mean of the streams' smoothed RTT, only when
this end sends, i.e. not ``reverse``), ``streams``, ``duration_s``, ``bytes_received``.
"""

from __future__ import annotations

import shutil

from cniscope.agent.probes.iperf3_parse import parse_tcp
from cniscope.agent.probes.probe import Outcome, ProbeContext, in_netns, run_tool, ticking
from cniscope.core.errors import ParseError

CONNECT_TIMEOUT_MS = 3000
MARGIN = 15.0


def client_argv(binary: str, ctx: ProbeContext, *extra: str) -> list[str]:
    p = ctx.params
    argv = [binary, "-c", ctx.target_address, "-p", str(ctx.iperf_port), "-J",
            "-t", f"{p.number('duration'):g}", "-P", str(p.integer("streams")),
            "--connect-timeout", str(CONNECT_TIMEOUT_MS), *extra]
    return in_netns(argv, ctx.netns)


def failure_from(err: ParseError, stderr: str, target: str) -> str:
    msg = str(err)
    if "Connection refused" in msg:
        return f"{msg} (no iperf3 server on {target}: is the target agent serving?)"
    tail = stderr.strip().splitlines()
    return msg + (f" — {tail[-1][:200]}" if tail else "")


class TcpProbe:
    async def run(self, ctx: ProbeContext) -> Outcome:
        binary = shutil.which("iperf3")
        if binary is None:
            return Outcome.failure("missing tool: iperf3 not found on the source node (install iperf3)")
        p = ctx.params
        extra: list[str] = []
        if p.flag("reverse"):
            extra.append("-R")
        if p.flag("bbr"):
            extra += ["-C", "bbr"]
        argv = client_argv(binary, ctx, *extra)
        duration = p.number("duration")
        async with ticking(ctx, duration, f"iperf3 tcp → {ctx.target_address}:{ctx.iperf_port}"):
            try:
                rc, out, err = await run_tool(argv, limit=duration + MARGIN)
            except TimeoutError:
                return Outcome.failure(f"iperf3 did not finish within {duration + MARGIN:.0f}s")
        try:
            rep = parse_tcp(out)
        except ParseError as exc:
            return Outcome.failure(failure_from(exc, err, f"{ctx.target_address}:{ctx.iperf_port}"),
                                   exit_code=rc)
        detail: dict[str, object] = {"exit_code": rc, "reverse": rep.reverse, "tool": "iperf3"}
        if rep.trailing:
            detail["trailing"] = rep.trailing[:500]
        return Outcome(ok=True, figures=rep.figures(), detail=detail)
