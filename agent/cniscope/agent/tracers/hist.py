"""The log-linear latency histogram the tcpconnlat BPF program fills: values 0-3 µs get one slot
each, then every power of two is split into 4 equal sub-buckets (≤ 25 % relative width)."""

from __future__ import annotations

SLOTS = 128


def slot_of(us: int) -> int:
    """Mirror of the BPF ``slot_of`` (for tests and for documentation)."""
    if us < 4:
        return us
    lg = us.bit_length() - 1
    return min(4 * (lg - 1) + ((us >> (lg - 2)) & 3), SLOTS - 1)


def slot_bounds(slot: int) -> tuple[int, int]:
    """[low, high) in µs of a slot."""
    if slot < 4:
        return slot, slot + 1
    lg, sub = slot // 4 + 1, slot % 4
    return (4 + sub) << (lg - 2), (5 + sub) << (lg - 2)


def quantile(counts: list[int], q: float) -> float | None:
    """The q-quantile in µs, linearly interpolated inside its slot (as histogram_quantile does)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for slot, c in enumerate(counts):
        if c and seen + c >= rank:
            lo, hi = slot_bounds(slot)
            return lo + (hi - lo) * max(rank - seen, 0) / c
        seen += c
    return float(slot_bounds(len(counts) - 1)[1])


def cumulative_le(counts: list[int], max_pow: int = 24) -> list[tuple[str, int]]:
    """Prometheus-style cumulative buckets at stable bounds 1, 2, 4 ... 2^max_pow µs, then +Inf.

    Slot boundaries fall exactly on powers of two, so these counts are exact, not estimated.
    """
    out: list[tuple[str, int]] = []
    for p in range(max_pow + 1):
        bound = 1 << p
        out.append((str(bound), sum(c for s, c in enumerate(counts) if slot_bounds(s)[1] <= bound)))
    out.append(("+Inf", sum(counts)))
    return out
