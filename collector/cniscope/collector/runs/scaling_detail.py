"""A service-scaling run's stored detail: per backend its rows with Δ against the smallest N and
"within noise" marks, and the slopes of connect setup over rule count in ns per rule."""

from __future__ import annotations

import re

from cniscope.core import benchmetrics as bm
from cniscope.core import stats

_SAFE = re.compile(r"[^a-z0-9]+")


def slope_ns_per_rule(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of setup time (µs) over rule count, in ns per rule."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = stats.mean(xs), stats.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx * 1000.0


def metric_prefix(backend: str) -> str:
    """A backend's name as a stored metric's prefix: ``iptables-nft`` → ``iptables_nft``."""
    return _SAFE.sub("_", backend.lower()).strip("_")


def scaling_detail(table: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    """Per backend: rows with Δ vs the smallest N and "within noise" marks, and the slope in ns/rule."""
    out: dict[str, object] = {}
    for b, rows in table.items():
        base = rows[0] if rows else None
        res: dict[str, object] = {"rows": rows}
        for stat in ("mean", "p50"):
            pts: list[tuple[float, float]] = []
            for r in rows:
                m = r.get(f"setup_{stat}_us")
                if isinstance(m, float) and isinstance(r.get("rules"), int):
                    pts.append((float(r["rules"]), m))  # type: ignore[arg-type]
                b0v = base.get(f"setup_{stat}_us") if base is not None else None
                if base is not None and isinstance(m, float) and isinstance(b0v, float):
                    b0 = bm.FigureStat(b0v, base[f"setup_{stat}_min_us"], base[f"setup_{stat}_max_us"])  # type: ignore[arg-type]
                    b1 = bm.FigureStat(m, r[f"setup_{stat}_min_us"], r[f"setup_{stat}_max_us"])  # type: ignore[arg-type]
                    d = bm.delta("connect.mean", b0, b1)
                    r[f"delta_{stat}_us"] = d.abs
                    r[f"delta_{stat}_pct"] = d.pct
                    r[f"verdict_{stat}"] = d.verdict if r is not base else "baseline"
            res[f"slope_{stat}_ns_per_rule"] = slope_ns_per_rule(pts)
        res["slope_ns_per_rule"] = res["slope_mean_ns_per_rule"]
        # the walk over the rules between the first and the last Service, against the smallest N
        b0w = base.get("walk_p50_us") if base is not None else None
        wpts: list[tuple[float, float]] = []
        for r in rows:
            w = r.get("walk_p50_us")
            fl = r.get("walk_floor_us")
            if isinstance(fl, float) and isinstance(r.get("rules"), int):
                wpts.append((float(r["rules"]), fl))  # type: ignore[arg-type]
            if base is not None and isinstance(w, float) and isinstance(b0w, float):
                d = bm.delta("connect.mean", bm.FigureStat(b0w, base["walk_p50_min_us"], base["walk_p50_max_us"]),  # type: ignore[arg-type]
                             bm.FigureStat(w, r["walk_p50_min_us"], r["walk_p50_max_us"]))  # type: ignore[arg-type]
                r["verdict_walk"] = d.verdict if r is not base else "baseline"
        res["slope_walk_ns_per_rule"] = slope_ns_per_rule(wpts)
        kpts = [(float(r["rules"]), float(r["kernel_setup_mean_us"])) for r in rows  # type: ignore[arg-type]
                if isinstance(r.get("kernel_setup_mean_us"), float) and isinstance(r.get("rules"), int)]
        res["slope_kernel_ns_per_rule"] = slope_ns_per_rule(kpts)
        out[b] = res
    return {"scaling": out}
