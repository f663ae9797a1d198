"""Inspection benchmarks: iptables-save parsing speed and the whole node report with 1,000 Services.

Run: .venv/bin/python benchmarks/bench_inspection.py

* parse a 10,059-rule NAT table (the seed report's 1,000-Service figure) and a 50,000-rule table with
  the census parser; best of 5; budgets 100 ms and 1 s; baseline: a bare ``str.splitlines()`` pass
  over the same text (ratio = parser cost per line relative to just splitting it).
* the whole node report (every unit except tracers) inside a lab node namespace loaded with 1,000
  kube-proxy Services through iptables-nft (10,008 NAT rules), against the same report on the empty
  namespace; budget 1 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from cniscope.agent.inspectors.iptables_parse import parse_iptables_save
from cniscope.lab import kubeproxy as kp
from cniscope.lab import netns

EPS = ["198.19.1.11", "198.19.2.11", "198.19.3.11"]


def best(fn: Callable[[], object], n: int = 5) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def nat_text(rules: int) -> str:
    n = (rules - kp.FIXED_NAT_RULES) // 10
    text = kp.render_iptables(kp.plan(n, EPS))
    extra = rules - kp.nat_rule_count(n)
    pad = "\n".join(f"-A KUBE-POSTROUTING -m comment --comment pad{i} -j RETURN" for i in range(extra))
    text = text.replace("\nCOMMIT\n", ("\n" + pad if pad else "") + "\nCOMMIT\n")
    assert parse_iptables_save(text).rules("nat") == rules
    return text


REPORT = r"""
import json, time
from cniscope.agent.capabilities import collect
from cniscope.agent.inspectors import INSPECTORS
units = [u for u in INSPECTORS.names() if u != "tracers"]
collect(only=units)  # warm imports and caches
times = []
for _ in range(3):
    t0 = time.perf_counter(); r = collect(only=units); times.append(time.perf_counter() - t0)
print(json.dumps({"best": min(times), "units": {u.name: u.duration_seconds for u in r.units}}))
"""


def report_in(ns: str) -> dict[str, object]:
    out = subprocess.run(netns.nsenter_argv(ns, [sys.executable, "-c", REPORT]), capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    print("## parse")
    for rules, budget in ((10_059, 0.100), (50_000, 1.0)):
        text = nat_text(rules)
        t = best(lambda text=text: parse_iptables_save(text))  # type: ignore[misc]
        base = best(lambda text=text: text.splitlines())  # type: ignore[misc]
        print(f"parse {rules:>6} NAT rules: {t * 1000:7.1f} ms  budget {budget * 1000:.0f} ms  "
              f"ratio-to-budget {t / budget:.3f}  ratio-to-splitlines {t / base:.1f}x")
    print("## whole report (tracers excluded)")
    ns = f"cnsbench{os.getpid() % 100000}"
    netns.add(ns)
    try:
        empty = report_in(ns)
        loaded = kp.load(ns, 1000, "iptables-nft", endpoints=EPS)
        full = report_in(ns)
        print(f"empty namespace:          {float(empty['best']) * 1000:7.1f} ms")  # type: ignore[arg-type]
        print(f"1,000 Services ({loaded.nat_rules} NAT rules): {float(full['best']) * 1000:7.1f} ms  budget 1000 ms  "  # type: ignore[arg-type]
              f"ratio-to-budget {float(full['best']):.3f}  ratio-to-empty "  # type: ignore[arg-type]
              f"{float(full['best']) / float(empty['best']):.1f}x")  # type: ignore[arg-type]
        units = full["units"]
        assert isinstance(units, dict)
        print("  per unit (ms): " + ", ".join(f"{k} {v * 1000:.0f}" for k, v in units.items()))
        med = statistics.median(units.values())
        print(f"  median unit {med * 1000:.1f} ms")
    finally:
        netns.delete(ns)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
