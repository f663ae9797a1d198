"""``http``: HTTP/1.1 GET load against the target agent's echo endpoint (``target_port + 1``).

Fixed-QPS mode (default) offers ``qps`` requests per second for ``duration`` seconds, keepalive or
``Connection: close``; ``max_qps`` sends back to back with ``concurrency`` in flight (a bandwidth
probe: it owns both nodes). Figures (stable names): ``requested_qps`` (fixed mode), ``actual_qps``
(successful answers per second of the window), ``requests``, ``ok``, ``errors``, ``errors_<kind>``
(refused, timeout, reset, protocol, status_NNN, ...), ``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms``,
``mean_ms``, ``connections`` (TCP connections opened), ``send_lag_p99_ms`` (fixed mode: how late
the client's own timer released requests — large values mean the source was starved).
"""

from __future__ import annotations

from cniscope.agent.probes.httpload import HttpLoad, LoadResult
from cniscope.agent.probes.probe import Outcome, ProbeContext
from cniscope.core import stats

TIMEOUT = 2.0


def figures_of(res: LoadResult) -> dict[str, float]:
    lat = res.latencies_ms
    f: dict[str, float] = {
        "requests": float(res.scheduled), "ok": float(len(lat)),
        "errors": float(sum(res.errors.values())), "connections": float(res.connections),
        "actual_qps": round(len(lat) / res.elapsed_s, 2) if res.elapsed_s > 0 else 0.0,
    }
    if res.send_lag_ms:
        f["send_lag_p99_ms"] = round(stats.percentile(res.send_lag_ms, 99), 4)
    for kind, n in res.errors.items():
        f[f"errors_{kind}"] = float(n)
    if lat:
        f.update({
            "p50_ms": round(stats.percentile(lat, 50), 4),
            "p90_ms": round(stats.percentile(lat, 90), 4),
            "p99_ms": round(stats.percentile(lat, 99), 4),
            "max_ms": round(max(lat), 4),
            "mean_ms": round(stats.mean(lat), 4),
        })
    return f


class HttpProbe:
    async def run(self, ctx: ProbeContext) -> Outcome:
        p = ctx.params
        duration, qps, keepalive = p.number("duration"), p.integer("qps"), p.flag("keepalive")
        port = ctx.target_port + 1
        target = f"http://{ctx.target_address}:{port}/"
        mode = "max" if p.flag("max_qps") else "fixed"
        load = HttpLoad(ctx.target_address, port, ctx.netns, keepalive=keepalive,
                        concurrency=p.integer("concurrency"), timeout=TIMEOUT)

        async def tick(fraction: float) -> None:
            await ctx.report(fraction, f"GET {target} at {qps}/s")

        async with load:
            if mode == "max":
                await ctx.report(0.0, f"GET {target} as fast as answers come")
                res = await load.max_rate(duration)
            else:
                res = await load.fixed_rate(qps, duration, tick)
        f = figures_of(res)
        if mode == "fixed":
            f["requested_qps"] = float(qps)
        detail: dict[str, object] = {"url": target, "mode": mode, "keepalive": keepalive,
                                     "errors_by_kind": dict(res.errors), "window_s": round(res.elapsed_s, 4)}
        if not res.latencies_ms:
            kinds = ", ".join(f"{k} ×{n}" for k, n in res.errors.most_common())
            return Outcome(ok=False, figures=f, detail=detail, error=f"no successful answer from {target} ({kinds})")
        return Outcome(ok=True, figures=f, detail=detail)
