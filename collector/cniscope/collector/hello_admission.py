"""Who may open a node's stream, and what it may bring: checks on a Hello beyond its fields.

- **Identity**: a caller whose identity names a node (an agent certificate, a Kubernetes token bound
  to a node) speaks only for that node.
- **Proof of boot**: a Hello for a boot the collector has seen must carry that boot's key
  (:mod:`.boot_keys`), as must each earlier boot it replays.
- **Size**: a capability report larger than the per-node cap is refused, naming the node and the cap.
- **Results and answers**: a batch's probe results must be the node's own — no result names another
  source node or answers a probe sent to another node.
"""

from __future__ import annotations

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.collector.boot_keys import BootKeys
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.principals import Principal, shorten
from cniscope.collector.validate import Refused


def boots_of(hello: agent_pb2.Hello) -> dict[str, str]:
    """Every boot the Hello speaks for (its own, then those it replays) → the key it presents."""
    boots = {hello.boot_id: hello.boot_key}
    for b in hello.replay_boot_ids:
        boots.setdefault(b, hello.replay_boot_keys.get(b, ""))
    return boots


def stored_hello(hello: agent_pb2.Hello) -> agent_pb2.Hello:
    """The Hello as the store keeps it: without its boot keys."""
    out = agent_pb2.Hello()
    out.CopyFrom(hello)
    out.ClearField("boot_key")
    out.ClearField("replay_boot_keys")
    return out


def check_capability_size(node: str, rep: common_pb2.CapabilityReport, cap: int) -> None:
    size = rep.ByteSize()
    if size > cap:
        raise Refused("RESOURCE_EXHAUSTED",
                      f"node {shorten(node)}: capability report of {size:,} bytes exceeds the cap of {cap:,} "
                      "bytes per node (CNISCOPE_MAX_CAPABILITY_BYTES)")


class HelloAdmission:
    def __init__(self, boot_keys: BootKeys, dispatcher: Dispatcher, max_capability_bytes: int) -> None:
        self.boot_keys = boot_keys
        self.dispatcher = dispatcher
        self.max_capability_bytes = max_capability_bytes

    def check(self, hello: agent_pb2.Hello, who: Principal) -> None:
        """Raise Refused when ``who`` may not open this node's stream with this Hello."""
        if who.node and who.node != hello.node:
            raise Refused("PERMISSION_DENIED",
                          f"{who.name} speaks for node {shorten(who.node)} only, not {shorten(hello.node)}")
        if hello.HasField("capabilities"):
            check_capability_size(hello.node, hello.capabilities, self.max_capability_bytes)
        why = self.boot_keys.check(hello.node, boots_of(hello))
        if why is not None:
            raise Refused("PERMISSION_DENIED", why)

    def foreign_results(self, node: str, batch: agent_pb2.Batch) -> str | None:
        """Why a batch's probe results are not all ``node``'s own (None when they are)."""
        for r in batch.probe_results:
            if r.source_node and r.source_node != node:
                return (f"probe result {shorten(r.probe_id, 64)} names source node {shorten(r.source_node)}, "
                        f"but this stream is node {node}'s")
            sent = self.dispatcher.sent_to(r.probe_id)
            if sent is not None and sent != node:
                return f"probe {shorten(r.probe_id, 64)} was sent to node {sent}, not to {node}"
        return None
