"""Base units for Prometheus: what a sample or probe figure name's unit suffix becomes when exposed."""

from __future__ import annotations

# A sample or probe figure carries its unit in its name (``p99_us``, ``loss_pct``); Prometheus wants
# base units (seconds, bytes, ratios, bits per second), so the exposition converts: suffix → (suffix, factor).
BASE_UNITS: tuple[tuple[str, str, float], ...] = (
    ("_millicores", "_cores", 1e-3),
    ("_ms", "_seconds", 1e-3),
    ("_us", "_seconds", 1e-6),
    ("_ns", "_seconds", 1e-9),
    ("_pct", "_ratio", 1e-2),
    ("_gbps", "_bits_per_second", 1e9),
    ("_mbps", "_bits_per_second", 1e6),
    ("_kib", "_bytes", 1024.0),
    ("_per_s", "_per_second", 1.0),
    ("_s", "_seconds", 1.0),
)


def base_unit(name: str) -> tuple[str, float]:
    """``rtt_p99_us`` → (``rtt_p99_seconds``, 1e-6): the exposed name and the factor its values take."""
    for suffix, base, factor in BASE_UNITS:
        if name.endswith(suffix):
            return name[: -len(suffix)] + base, factor
    return name, 1.0
