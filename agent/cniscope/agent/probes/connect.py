"""``connect``: N sequential TCP connect+close to a port — the setup cost a "Connection: close"
client pays per request (SYN, SYN-ACK, and on a ClusterIP the NAT lookup on the way).

Runs on a dedicated thread inside the source namespace with blocking sockets, so the timing holds
only the kernel's work, not event-loop scheduling. Figures (stable names): ``attempts``, ``connected``,
``errors``, ``min_us``, ``mean_us``, ``p50_us``, ``p99_us``, ``max_us``, ``conn_per_s`` (successful
connections per second of wall time); ``attempts`` is below ``count`` when the 25 s budget ran
out first (said in the detail); errors by kind (``errors_refused``, ``errors_timeout``,
``errors_unreachable``, ...) as figures and in the detail.

Where this agent runs the ``tcpconnlat`` tracer on the probe's namespace, the probe reads the
tracer's counters just before and just after its connects, on the same thread, and adds the kernel's
view of exactly those connects: ``kernel_connects``, ``kernel_failures``, ``kernel_setup_sum_us`` and
``kernel_setup_mean_us`` (SYN_SENT → ESTABLISHED). Without a reading the detail's ``kernel_note``
says why (:func:`cniscope.agent.tracers.live.find`).
"""

from __future__ import annotations

import errno
import socket
import time
from collections import Counter

from cniscope.agent import nsthread
from cniscope.agent.probes.probe import Outcome, ProbeContext, ticking
from cniscope.agent.tracers import live
from cniscope.agent.tracers.tcpconnlat import TcpConnLat
from cniscope.core import stats

BUDGET_SECONDS = 25.0  # the collector waits for a light probe's result about this long


def error_kind(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no_local_port"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__).lower()


def connect_loop(address: str, port: int, count: int, timeout: float,
                 budget: float = BUDGET_SECONDS) -> tuple[list[float], Counter[str], float]:
    """Blocking: ``count`` connect+close, stopping early once ``budget`` seconds have passed;
    returns (setup µs of each success, errors by kind, wall s)."""
    times: list[float] = []
    errors: Counter[str] = Counter()
    t_start = time.perf_counter()
    for _ in range(count):
        if time.perf_counter() - t_start > budget:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            t0 = time.perf_counter_ns()
            s.connect((address, port))
            times.append((time.perf_counter_ns() - t0) / 1000.0)
        except OSError as exc:
            errors[error_kind(exc)] += 1
        finally:
            s.close()
    return times, errors, time.perf_counter() - t_start


def summarise(times: list[float], errors: Counter[str], wall: float, attempts: int) -> dict[str, float]:
    f: dict[str, float] = {"attempts": float(attempts), "connected": float(len(times)),
                           "errors": float(sum(errors.values()))}
    for kind, n in errors.items():
        f[f"errors_{kind}"] = float(n)
    if times:
        f.update({
            "min_us": round(min(times), 1),
            "mean_us": round(stats.mean(times), 1),
            "p50_us": round(stats.percentile(times, 50), 1),
            "p99_us": round(stats.percentile(times, 99), 1),
            "max_us": round(max(times), 1),
            "conn_per_s": round(len(times) / wall, 1) if wall > 0 else 0.0,
        })
    return f


Totals = tuple[int, int, int]  # tcpconnlat's (established, failed, latency sum µs)


def kernel_figures(before: Totals, after: Totals) -> dict[str, float]:
    """The tracer's counters across the connects: ``kernel_connects`` (SYN_SENT → ESTABLISHED),
    ``kernel_failures``, ``kernel_setup_sum_us`` and, when it counted any, ``kernel_setup_mean_us``."""
    est, failed, sum_us = (float(a - b) for a, b in zip(after, before, strict=True))
    out = {"kernel_connects": est, "kernel_failures": failed, "kernel_setup_sum_us": sum_us}
    if est > 0:
        out["kernel_setup_mean_us"] = round(sum_us / est, 1)
    return out


def _totals(tracer: TcpConnLat | None) -> Totals | None:
    try:
        return tracer.totals() if tracer is not None else None
    except (RuntimeError, OSError):  # stopped while the probe ran
        return None


class ConnectProbe:
    async def run(self, ctx: ProbeContext) -> Outcome:
        p = ctx.params
        count, timeout = p.integer("count"), p.number("timeout")
        port = p.integer("port") or ctx.target_port
        target = f"{ctx.target_address}:{port}"
        found, why = live.find(TcpConnLat.name, ctx.netns)
        tracer = found if isinstance(found, TcpConnLat) else None

        def work() -> tuple[tuple[list[float], Counter[str], float], Totals | None, Totals | None]:
            before = _totals(tracer)   # read on the probe's own thread, right around its connects
            out = connect_loop(ctx.target_address, port, count, timeout)
            return out, before, _totals(tracer)

        async with ticking(ctx, max(1.0, count * 0.0003), f"{count} × connect+close → {target}"):
            (times, errors, wall), before, after = await nsthread.run_in(ctx.netns, work)
        attempts = len(times) + sum(errors.values())
        figures = summarise(times, errors, wall, attempts)
        detail: dict[str, object] = {"port": port, "errors_by_kind": dict(errors), "wall_s": round(wall, 4)}
        if before is not None and after is not None:
            figures.update(kernel_figures(before, after))
        else:
            detail["kernel_note"] = why or f"tracer {TcpConnLat.name} stopped while the probe ran"
        if attempts < count:
            detail["stopped_early"] = f"{attempts} of {count} attempts within the {BUDGET_SECONDS:.0f}s budget"
        if not times:
            kinds = ", ".join(f"{k} ×{n}" for k, n in errors.most_common())
            return Outcome(ok=False, figures=figures, detail=detail,
                           error=f"no connection to {target} succeeded ({kinds})")
        return Outcome(ok=True, figures=figures, detail=detail)
