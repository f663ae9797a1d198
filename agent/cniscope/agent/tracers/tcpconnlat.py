"""TCP connect latency: SYN_SENT→ESTABLISHED from ``sock:inet_sock_set_state``, failures
SYN_SENT→CLOSE. Counters are cumulative since the tracer started."""

from __future__ import annotations

from cniscope.agent.tracers import hist
from cniscope.agent.tracers.bcc_tracer import BccTracer
from cniscope.api.v1 import common_pb2


def _s(name: str, value: float, now_ns: int, **labels: str) -> common_pb2.Sample:
    return common_pb2.Sample(name=name, value=float(value), time_unix_nano=now_ns, labels=labels)


class TcpConnLat(BccTracer):
    name = "tcpconnlat"
    events = ["sock/inet_sock_set_state"]

    def totals(self) -> tuple[int, int, int]:
        """(established, failed, latency sum µs): the counters a probe reads around its connects."""
        est, failed, total_us = self.array("counts")
        return est, failed, total_us

    def read(self) -> tuple[list[int], int, int, int]:
        """(histogram slots, established, failed, latency sum µs)."""
        est, failed, total_us = self.array("counts")
        return self.array("hist"), est, failed, total_us

    def figures(self) -> dict[str, float]:
        slots, est, failed, total_us = self.read()
        out: dict[str, float] = {"connects": est, "failures": failed, "latency_sum_us": total_us}
        for q, key in ((0.5, "p50_us"), (0.99, "p99_us")):
            v = hist.quantile(slots, q)
            if v is not None:
                out[key] = round(v, 1)
        if est:
            out["mean_us"] = round(total_us / est, 1)
        return out

    def samples(self, now_ns: int) -> list[common_pb2.Sample]:
        slots, est, failed, total_us = self.read()
        out = [_s("tcp_connect_latency_us_bucket", n, now_ns, le=le) for le, n in hist.cumulative_le(slots)]
        out += [_s("tcp_connect_latency_us_count", est, now_ns), _s("tcp_connect_latency_us_sum", total_us, now_ns),
                _s("tcp_connect_failures_total", failed, now_ns)]
        for q in (0.5, 0.99):
            v = hist.quantile(slots, q)
            if v is not None:
                out.append(_s("tcp_connect_latency_us", v, now_ns, quantile=str(q)))
        return out
