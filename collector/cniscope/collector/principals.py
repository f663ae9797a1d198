"""Who is calling, and what they may do.

Every cniscope method needs one verb: agents ``connect`` (AgentHub), people and scripts ``view``
(watch, list, get, compare), ``probe`` (RunProbe), ``run`` (start and cancel runs) or ``admin``
(delete runs). A caller is a :class:`Principal`: the verbs it holds and, for an agent whose identity
names one, the node it may speak for.

Outside Kubernetes identities come from two different secrets and from certificates:

- the **client token** (``CNISCOPE_TOKEN_FILE`` / ``CNISCOPE_TOKEN``) holds view, probe, run, admin;
- the **agent token** (``CNISCOPE_AGENT_TOKEN_FILE``) holds connect only, for any node — each boot of
  an agent then proves itself by its boot key (:mod:`.boot_keys`);
- with mutual TLS a client certificate whose common name is ``cniscope-agent:<node>`` is that node's
  agent and nothing else; any other certificate the client CA signed is a person (every client verb).
"""

from __future__ import annotations

from dataclasses import dataclass

CONNECT, VIEW, PROBE, RUN, ADMIN = "connect", "view", "probe", "run", "admin"
CLIENT_VERBS = frozenset({VIEW, PROBE, RUN, ADMIN})
AGENT_CN_PREFIX = "cniscope-agent:"

# the verb each method needs; a cniscope method missing here needs admin
METHOD_VERBS = {
    "/cniscope.api.v1.AgentHub/Connect": CONNECT,
    "/cniscope.api.v1.Cluster/Watch": VIEW,
    "/cniscope.api.v1.Cluster/ListNodes": VIEW,
    "/cniscope.api.v1.Cluster/GetNode": VIEW,
    "/cniscope.api.v1.Cluster/ListProbeResults": VIEW,
    "/cniscope.api.v1.Cluster/RunProbe": PROBE,
    "/cniscope.api.v1.Runs/ListRuns": VIEW,
    "/cniscope.api.v1.Runs/GetRun": VIEW,
    "/cniscope.api.v1.Runs/Compare": VIEW,
    "/cniscope.api.v1.Runs/StartRun": RUN,
    "/cniscope.api.v1.Runs/StartServiceScaling": RUN,
    "/cniscope.api.v1.Runs/CancelRun": RUN,
    "/cniscope.api.v1.Runs/DeleteRun": ADMIN,
}
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def verb_of(method: str) -> str:
    return METHOD_VERBS.get(method, ADMIN)


@dataclass(frozen=True)
class Principal:
    """A caller: ``name`` for logs and rate limits, the verbs it holds, and the node an agent identity
    is bound to ("" when it may speak for any node, as the shared agent token may)."""

    name: str
    verbs: frozenset[str]
    node: str = ""
    via: str = "token"          # token | certificate | kubernetes | open

    def may(self, verb: str) -> bool:
        return verb in self.verbs


OPEN = Principal("anyone (authentication off)", CLIENT_VERBS | {CONNECT}, via="open")


def from_certificate(common_name: str) -> Principal:
    """The principal a verified client certificate names."""
    if common_name.startswith(AGENT_CN_PREFIX):
        node = common_name[len(AGENT_CN_PREFIX):]
        return Principal(f"agent certificate of {node}", frozenset({CONNECT}), node=node, via="certificate")
    return Principal(f"certificate {common_name}", CLIENT_VERBS, via="certificate")


def shorten(text: str, limit: int = 200) -> str:
    """``text`` quoted for an error message or a log line: at most ``limit`` bytes of it, and how
    long it really was when cut."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return repr(text)
    cut = raw[:limit].decode("utf-8", "ignore")
    return f"{cut!r}… ({len(raw)} bytes)"
