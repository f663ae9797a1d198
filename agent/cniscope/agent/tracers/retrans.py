"""TCP retransmissions from ``tcp:tcp_retransmit_skb``, by socket state."""

from __future__ import annotations

from cniscope.agent.tracers.bcc_tracer import BccTracer
from cniscope.api.v1 import common_pb2

TCP_STATES = ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
              "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"]


class Retrans(BccTracer):
    name = "retrans"
    events = ["tcp/tcp_retransmit_skb"]

    def by_state(self) -> dict[str, int]:
        return {(TCP_STATES[i] if i < len(TCP_STATES) else str(i)): n
                for i, n in enumerate(self.array("by_state")) if n}

    def figures(self) -> dict[str, float]:
        return {"retransmits": float(sum(self.by_state().values()))}

    def samples(self, now_ns: int) -> list[common_pb2.Sample]:
        by = self.by_state()
        out = [common_pb2.Sample(name="tcp_retransmits_total", value=float(n), time_unix_nano=now_ns,
                                 labels={"state": st}) for st, n in by.items()]
        out.append(common_pb2.Sample(name="tcp_retransmits_all_total", value=float(sum(by.values())),
                                     time_unix_nano=now_ns))
        return out
