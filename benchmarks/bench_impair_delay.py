"""Delay-line accuracy: inject 0.5, 2 and 10 ms on node1's egress (NFQUEUE delay line, or netem
where the kernel has it) and compare per-echo RTTs of bare ping node1 → node2 against the median
of the same ping without the impairment, in the same run. Prints p50/p99 of the error
(measured added delay minus injected) and the delay line's own release lateness."""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

from cniscope.lab import impair, netns
from cniscope.lab.impair_plan import Impairment
from cniscope.lab.lab import Lab, LabSpec

COUNT = 300


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def ping_us(lab: Lab) -> list[float]:
    n1, n2 = lab.nodes()[:2]
    out = netns.exec_in(n1.netns, ["ping", "-n", "-c", str(COUNT), "-i", "0.01", "-W", "1", n2.host_ip],
                        timeout=60)
    return [float(x) * 1000 for x in re.findall(r"time=([0-9.]+) ms", out)]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(LabSpec(name="benchimp", nodes=2), state_root=Path(tmp))
        try:
            lab.up()
            base = statistics.median(ping_us(lab))
            print(f"baseline RTT p50 {base:.0f} µs ({COUNT} echoes)")
            print(f"{'injected':>9} {'method':>10} {'err p50':>9} {'err p99':>9} {'late p50':>9} {'late p99':>9}")
            for delay_us in (500.0, 2000.0, 10000.0):
                done = impair.apply(lab, "node1", Impairment(delay_us=delay_us, max_seconds=60))
                rtts = ping_us(lab)
                impair.clear(lab, "node1")
                err = [r - base - delay_us for r in rtts]
                stats_file = lab.dir / "impair" / "delayline-node1-egress.stats.json"
                late = json.loads(stats_file.read_text()) if stats_file.exists() else {}
                print(f"{delay_us / 1000:>7g}ms {done.delay_method:>10} {pct(err, 50):>7.0f}µs {pct(err, 99):>7.0f}µs "
                      f"{late.get('late_p50_us', 0):>7.1f}µs {late.get('late_p99_us', 0):>7.1f}µs")
        finally:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
