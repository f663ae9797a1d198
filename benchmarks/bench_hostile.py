"""Peak collector memory under the hostile loads of issue 13 (findings 5 and 6), scaled up from the
test's: a collector process with client and agent tokens, its peak RSS (VmHWM, reset before each
load) over its RSS before the load.

Run: .venv/bin/python benchmarks/bench_hostile.py [--quick] [--only health,listnodes,watch,ingest]
The issue measured +449 MB (160 connections x 4 MiB health requests), +1,083 MB (a Watch that never
reads, 120 batches of 3.2 MiB) and +968 MB (2 streams x 120 batches of 3.6 MiB); target: every load
within 64 MB of idle.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import memory_kit as mk  # type: ignore[import-not-found]  # noqa: E402

LOADS = ("health", "listnodes", "watch", "ingest")
REFERENCE = ("flood",)  # the watch load's batches with nobody watching: what ingest alone costs


def measure(c: mk.CollectorProcess, what: str, load: Callable[[], object]) -> int:
    time.sleep(1.0)
    base = c.rss
    c.reset_peak()
    t0 = time.monotonic()
    outcome = load()
    grown: int = c.peak - base
    print(f"{what}: peak {c.peak / mk.MIB:.0f} MiB, {grown / mk.MIB:+.0f} MiB over {base / mk.MIB:.0f} MiB "
          f"({time.monotonic() - t0:.1f} s; {outcome})", flush=True)
    return grown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 batches per stream instead of 120")
    ap.add_argument("--only", default=",".join(LOADS), metavar="LOADS",
                    help=f"comma-separated loads to run, of {', '.join(LOADS + REFERENCE)} (default: "
                         f"{', '.join(LOADS)}, in that order; flood is the watch load's batches with no watcher)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not only <= set(LOADS + REFERENCE):
        ap.error(f"--only: unknown load(s) {', '.join(sorted(only - set(LOADS + REFERENCE)))}; "
                 f"known: {', '.join(LOADS + REFERENCE)}")
    n = 40 if args.quick else 120
    with tempfile.TemporaryDirectory() as tmp:
        c = mk.start(Path(tmp))
        worst = 0
        try:
            def requests(path: str) -> list[str]:
                return sorted(set(mk.hostile_requests(c, path, 160, 5.0)))

            for load, path, what in (
                    ("health", "/grpc.health.v1.Health/Check", "160 x 4 MiB health requests, no token"),
                    ("listnodes", "/cniscope.api.v1.Cluster/ListNodes", "160 x 4 MiB ListNodes, no token")):
                if load not in only:
                    continue
                worst = max(worst, measure(c, what, functools.partial(requests, path)))

            def watch() -> str:
                h, _ = mk.stalled_watch(c)
                try:
                    return f"acked {asyncio.run(mk.agent_flood(c.address, 'flood-w', n, 3.2))}"
                finally:
                    h.close()

            if "watch" in only:
                worst = max(worst, measure(c, f"Watch never read + {n} x 3.2 MiB batches", watch))
            def flood() -> str:
                return f"acked {asyncio.run(mk.agent_flood(c.address, 'flood-n', n, 3.2))}"

            if "flood" in only:  # a reference, not a target: counted in no worst
                measure(c, f"no watcher, {n} x 3.2 MiB batches", flood)

            async def two() -> list[int]:
                return list(await asyncio.gather(mk.agent_flood(c.address, "flood-a", n, 3.6),
                                                 mk.agent_flood(c.address, "flood-b", n, 3.6)))

            if "ingest" in only:
                worst = max(worst, measure(c, f"2 streams x {n} x 3.6 MiB batches", lambda: f"acked {asyncio.run(two())}"))
        finally:
            mk.stop(c)
    print(f"worst: {worst / mk.MIB:+.0f} MiB over idle (target: within 64 MB)")


if __name__ == "__main__":
    main()
