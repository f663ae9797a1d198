"""``dns``: N lookups of a name through a resolver, with dnspython over UDP.

The resolver is, in order: the ``resolver`` parameter; an explicit target address; the first
``nameserver`` of the source's resolv.conf — for a namespace ``/run/netns/NAME`` that is
``/etc/netns/NAME/resolv.conf`` (the iproute2 convention), for ``/proc/PID/ns/net`` the process's
``/proc/PID/root/etc/resolv.conf``, else ``/etc/resolv.conf``. Lookups run sequentially on a thread
inside the source namespace.

Only answered lookups (NOERROR with an answer) count as latency. NXDOMAIN, SERVFAIL, an empty
answer and timeouts are failures by kind, never latency. Figures (stable names): ``lookups``,
``answered``, ``failures``, ``failures_<rcode>`` (``nxdomain``, ``servfail``, ``noanswer``,
``timeout``, ...), ``p50_ms``, ``p99_ms``, ``mean_ms``, ``min_ms``, ``max_ms``. ``lookups`` is
below ``count`` when the 25 s budget ran out first (said in the detail).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from cniscope.agent import nsthread
from cniscope.agent.probes.probe import Outcome, ProbeContext, ticking
from cniscope.core import stats

BUDGET_SECONDS = 25.0  # the collector waits for a light probe's result about this long


def resolv_conf_for(netns: str) -> Path:
    if netns.startswith("/run/netns/"):
        p = Path("/etc/netns") / Path(netns).name / "resolv.conf"
        if p.exists():
            return p
    parts = Path(netns).parts
    if len(parts) >= 3 and parts[1] == "proc" and parts[2].isdigit():
        return Path("/proc") / parts[2] / "root" / "etc" / "resolv.conf"
    return Path("/etc/resolv.conf")


def nameserver_from(text: str) -> str | None:
    for line in text.splitlines():
        bits = line.split()
        if len(bits) >= 2 and bits[0] == "nameserver":
            return bits[1]
    return None


def lookup_loop(resolver: str, name: str, rdtype: str, count: int, timeout: float,
                budget: float = BUDGET_SECONDS) -> tuple[list[float], Counter[str]]:
    import dns.exception  # dnspython (~4 MiB) is loaded by the agents that run a dns probe, only
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    times: list[float] = []
    failures: Counter[str] = Counter()
    qtype = dns.rdatatype.from_text(rdtype)
    t_start = time.perf_counter()
    for _ in range(count):
        if time.perf_counter() - t_start > budget:
            break
        q = dns.message.make_query(name, qtype)
        t0 = time.perf_counter()
        try:
            r = dns.query.udp(q, resolver, timeout=timeout)
        except dns.exception.Timeout:
            failures["timeout"] += 1
            continue
        except (OSError, dns.exception.DNSException) as exc:
            failures[type(exc).__name__.lower()] += 1
            continue
        elapsed = (time.perf_counter() - t0) * 1000.0
        rcode = r.rcode()
        if rcode != dns.rcode.NOERROR:
            failures[dns.rcode.to_text(rcode).lower()] += 1
        elif not r.answer:
            failures["noanswer"] += 1
        else:
            times.append(elapsed)
    return times, failures


class DnsProbe:
    async def run(self, ctx: ProbeContext) -> Outcome:
        p = ctx.params
        resolver = p.text("resolver") or ctx.target_address
        source = "parameter" if p.text("resolver") else "target address"
        if not resolver:
            conf = resolv_conf_for(ctx.netns)
            try:
                resolver = nameserver_from(conf.read_text()) or ""
            except OSError as exc:
                return Outcome.failure(f"no resolver given and {conf} is unreadable: {exc.strerror}")
            if not resolver:
                return Outcome.failure(f"no resolver given and {conf} names no nameserver")
            source = str(conf)
            ctx.target_address = resolver  # the result names the resolver that was asked
        count, name, rdtype = p.integer("count"), p.text("name"), p.text("rdtype")
        async with ticking(ctx, max(1.0, count * 0.002), f"{count} × {rdtype} {name} @ {resolver}"):
            times, failures = await nsthread.run_in(
                ctx.netns, lambda: lookup_loop(resolver, name, rdtype, count, p.number("timeout")))
        done = len(times) + sum(failures.values())
        f: dict[str, float] = {"lookups": float(done), "answered": float(len(times)),
                               "failures": float(sum(failures.values()))}
        for kind, n in failures.items():
            f[f"failures_{kind}"] = float(n)
        if times:
            f.update({"p50_ms": round(stats.percentile(times, 50), 4),
                      "p99_ms": round(stats.percentile(times, 99), 4),
                      "mean_ms": round(stats.mean(times), 4),
                      "min_ms": round(min(times), 4), "max_ms": round(max(times), 4)})
        detail: dict[str, object] = {"resolver": resolver, "resolver_from": source, "name": name,
                                     "rdtype": rdtype, "failures_by_kind": dict(failures)}
        if done < count:
            detail["stopped_early"] = f"{done} of {count} lookups within the {BUDGET_SECONDS:.0f}s budget"
        if not times:
            kinds = ", ".join(f"{k} ×{n}" for k, n in failures.most_common())
            return Outcome(ok=False, figures=f, detail=detail, error=f"no answer for {name} from {resolver} ({kinds})")
        return Outcome(ok=True, figures=f, detail=detail)
