"""Inline SVG bar charts (no scripts, no fonts or styles fetched from anywhere)."""

from __future__ import annotations

import html
from collections.abc import Sequence

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7")


def bars(title: str, labels: Sequence[str], values: Sequence[float | None], *, unit: str = "",
         lo: Sequence[float | None] | None = None, hi: Sequence[float | None] | None = None,
         subtitle: str = "", width: int = 640) -> str:
    """Horizontal bars, one per label, with an optional min–max whisker per bar."""
    e = html.escape
    row_h, left, right, top = 26, 230, 110, 40
    h = top + row_h * len(labels) + 12
    plot_w = width - left - right
    vmax = max([v for v in (*values, *(hi or [])) if v is not None] or [1.0]) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{h}" '
             f'viewBox="0 0 {width} {h}" font-family="sans-serif" font-size="12">',
             f"<title>{e(title)}</title>",
             f'<text x="4" y="16" font-weight="bold" font-size="13">{e(title)}</text>']
    if subtitle:
        parts.append(f'<text x="4" y="31" fill="#666">{e(subtitle)}</text>')
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{e(lab)}</text>')
        if v is None:
            parts.append(f'<text x="{left + 4}" y="{y + 15}" fill="#999">not measured</text>')
            continue
        w = max(1.0, plot_w * v / vmax)
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"/>')
        a = lo[i] if lo else None
        b = hi[i] if hi else None
        if a is not None and b is not None and b > a:
            xa, xb, ym = left + plot_w * a / vmax, left + plot_w * b / vmax, y + row_h / 2 - 1
            parts.append(f'<line x1="{xa:.1f}" y1="{ym}" x2="{xb:.1f}" y2="{ym}" stroke="#222" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + w + 5:.1f}" y="{y + 15}">{e(_num(v))} {e(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _num(v: float) -> str:
    if float(v).is_integer() or abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"
