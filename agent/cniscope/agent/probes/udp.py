"""``udp``: UDP throughput, loss and jitter with ``iperf3 -u -b RATE -J``.

Figures (stable names): ``requested_gbps``, ``sent_gbps`` (what the sender offered),
``achieved_gbps`` (what the receiver got), ``loss_pct``, ``jitter_ms``, ``sender_packets``,
``receiver_packets`` (datagrams that arrived), ``lost_packets``, ``out_of_order``,
``sender_drops`` (UDP ``SndbufErrors`` + interface tx drops in the sending namespace during the
test), ``duration_s`` and ``valid`` (1/0). ``valid`` is 0 — with the reason in the detail — when
the sender offered or the receiver got less than 95 % of the requested rate, or the sending host
itself dropped datagrams: then the loss figure describes the sender, not the network.
"""

from __future__ import annotations

import shutil

from cniscope.agent.probes.iperf3_parse import parse_udp
from cniscope.agent.probes.netcounters import sender_drop_counters
from cniscope.agent.probes.probe import Outcome, ProbeContext, run_tool, ticking
from cniscope.agent.probes.tcp import MARGIN, client_argv, failure_from
from cniscope.core.errors import ParseError


class UdpProbe:
    async def run(self, ctx: ProbeContext) -> Outcome:
        binary = shutil.which("iperf3")
        if binary is None:
            return Outcome.failure("missing tool: iperf3 not found on the source node (install iperf3)")
        p = ctx.params
        rate_mbps = p.number("rate_mbps")
        per_stream = max(1, int(rate_mbps * 1e6) // p.integer("streams"))
        argv = client_argv(binary, ctx, "-u", "-b", str(per_stream), "-l", str(p.integer("length")))
        duration = p.number("duration")
        before = await sender_drop_counters(ctx.netns)
        async with ticking(ctx, duration, f"iperf3 udp {rate_mbps:g} Mbit/s → {ctx.target_address}"):
            try:
                rc, out, err = await run_tool(argv, limit=duration + MARGIN)
            except TimeoutError:
                return Outcome.failure(f"iperf3 did not finish within {duration + MARGIN:.0f}s")
        after = await sender_drop_counters(ctx.netns)
        try:
            rep = parse_udp(out)
        except ParseError as exc:
            return Outcome.failure(failure_from(exc, err, f"{ctx.target_address}:{ctx.iperf_port}"),
                                   exit_code=rc)
        drops = sum(max(0, after.get(k, 0) - v) for k, v in before.items())
        valid, reason = rep.validity(drops)
        detail: dict[str, object] = {"exit_code": rc, "tool": "iperf3", "valid": valid,
                                     "drop_counters_before": before, "drop_counters_after": after}
        if reason:
            detail["invalid_reason"] = reason
        if rep.trailing:
            detail["trailing"] = rep.trailing[:500]
        return Outcome(ok=True, figures=rep.figures(drops), detail=detail)
