"""One typed config object per process; every setting is also a ``CNISCOPE_*`` environment variable
and a flag of its command, and declares its default, unit and help once, here (``settings``).

Precedence: explicit CLI value > environment > default. Secrets (tokens) come from files or the
environment, never from the command line.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from cniscope.core.errors import ConfigError

T = TypeVar("T")

DEFAULT_COLLECTOR = "127.0.0.1:7400"
LOG_LEVELS = ("debug", "info", "warning", "error")


def setting(default: Any = "", help: str = "", unit: str = "", *, shown: str = "", choices: tuple[str, ...] = (),
            repeat: bool = False, metavar: str = "", factory: Any = None) -> Any:
    """One setting: its default, what it does, its unit; ``shown`` describes a computed default,
    ``repeat`` makes the flag repeatable (values joined with commas)."""
    meta = {"help": help, "unit": unit, "shown": shown, "choices": choices, "repeat": repeat, "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# Variables that are not settings of the agent or the collector: they belong to other commands.
OTHER_VARIABLES = {
    "CNISCOPE_COLLECTOR": "where people-facing commands (cli, tui) find the collector",
    "CNISCOPE_LAB_DIR": "where the lab keeps its state (default /run/cniscope/lab)",
    "CNISCOPE_KUBE_HARNESS": "a built lab Kubernetes binary (lab --kubernetes)",
    "CNISCOPE_PROBE_POD_PORT": "the probe pod's accept port (cniscope k8s probe-pod)",
}

# Secrets travel in the environment or in files, never on the command line: help and ``config show``
# name the variable, and show a value only as redacted.
SECRET_VARIABLES = {"CNISCOPE_TOKEN": "the bearer token itself; prefer a file named by CNISCOPE_TOKEN_FILE"}


@dataclass
class AgentConfig:
    node: str = setting(help="this node's name", shown="the hostname", factory=socket.gethostname)
    collector: str = setting(DEFAULT_COLLECTOR, "collector address HOST:PORT (or unix:///path)")
    host_ip: str = setting("", "this node's address for host-path probes")
    pod_ip: str = setting("", "the probe pod's address for pod-path probes")
    pod_netns: str = setting("", "the probe pod's netns (/run/netns/X or /proc/PID/ns/net); empty: found by the API")
    sample_interval: float = setting(5.0, "time between sample batches", "s")
    mesh_interval: float = setting(30.0, "time between light-mesh RTT rounds (0: no mesh)", "s")
    mesh_fanout: int = setting(8, "peers each mesh round probes (the mesh is bounded by this, not N²)", "peers")
    spool_max_batches: int = setting(10_000, "un-acknowledged batches kept for resending", "batches")
    spool_max_bytes: int = setting(32 * 1024 * 1024, "bytes of un-acknowledged batches kept", "bytes")
    spool_path: str = setting("", "on-disk spool file (empty: memory only)", metavar="FILE")
    backoff_initial: float = setting(1.0, "first reconnect delay", "s")
    backoff_factor: float = setting(1.6, "reconnect delay growth per failure (a factor)")
    backoff_max: float = setting(60.0, "longest reconnect delay", "s")
    backoff_jitter: float = setting(0.2, "random spread of each reconnect delay (a fraction of it)")
    keepalive_time: float = setting(20.0, "time between HTTP/2 pings on an idle link", "s")
    keepalive_timeout: float = setting(10.0, "time to wait for a ping's answer", "s")
    target_port: int = setting(7411, "TCP accept-and-close port; the HTTP echo is on port+1", metavar="PORT")
    iperf_port: int = setting(5201, "iperf3 server port", metavar="PORT")
    token_file: str = setting("", "file holding the bearer token (else CNISCOPE_TOKEN)", metavar="FILE")
    tls_ca: str = setting("", "CA bundle that signs the collector's certificate (file)")
    tls_cert: str = setting("", "client certificate for mutual TLS (file)")
    tls_key: str = setting("", "client certificate's key (file)")
    metrics_listen: str = setting("", "serve Prometheus /metrics here, HOST:PORT (empty: off)")
    allow_cidrs: str = setting("198.18.0.0/15", "probe targets allowed besides peers, comma-separated CIDRs; "
                               "in Kubernetes discovered unless set")
    log_level: str = setting("info", "log level", choices=LOG_LEVELS)
    health_listen: str = setting("", "serve grpc.health.v1 here, HOST:PORT (empty: off)")
    kubernetes: str = setting("auto", "use the Kubernetes API (auto: in a cluster or with KUBECONFIG)",
                              choices=("auto", "on", "off"))
    probe_namespace: str = setting("cniscope-probe", "namespace of this node's probe pod")
    probe_selector: str = setting("app.kubernetes.io/name=cniscope-probe", "label selector of the probe pods")
    probe_pod_recheck: float = setting(30.0, "time between checks that the probe pod is still the same", "s")
    capabilities_budget: float = setting(5.0, "a capability refresh still running after this answers with "
                                              "what has finished", "s")
    tracers: str = setting("", "bcc tracers to run, comma-separated (tcpconnlat, retrans, drops); empty: none")
    tracer_netns: str = setting("", "network namespace the tracers watch (empty: every namespace)")
    kube_proxy_metrics: str = setting("127.0.0.1:10249", "kube-proxy's metrics address HOST:PORT (off: not read)")
    cache_dir: str = setting("/var/cache/cniscope", "where tracers unpack kernel headers once (directory)")
    host_proc: str = setting("/proc", "the host's /proc (a DaemonSet mounts it under /host)")
    host_sys: str = setting("/sys", "the host's /sys")
    host_run: str = setting("/run", "the host's /run")
    sa_token: str = setting("/var/run/secrets/kubernetes.io/serviceaccount/token",
                            "in-cluster service account token (file)")
    sa_ca: str = setting("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "in-cluster API CA (file)")


@dataclass
class CollectorConfig:
    listen: str = setting("127.0.0.1:7400", "gRPC address HOST:PORT or unix:///path (repeat the flag for several)",
                          repeat=True)
    db: str = setting("cniscope.db", "SQLite store (file)")
    stale_after: float = setting(15.0, "silence before a node shows as stale", "s")
    token_file: str = setting("", "file holding the client token people and scripts present (else "
                                  "CNISCOPE_TOKEN); agents need agent_token_file, a different secret",
                              metavar="FILE")
    agent_token_file: str = setting("", "file holding the agent token agents present (a different secret "
                                        "from the client token; it admits nothing but the agent stream)",
                                    metavar="FILE")
    kube_auth: str = setting("off", "check Kubernetes ServiceAccount tokens with TokenReview (agents: bound to "
                                    "their node) and people's verbs with SubjectAccessReview",
                             choices=("off", "on"))
    kube_audience: str = setting("cniscope", "the audience agents' projected ServiceAccount tokens carry")
    kube_agent_account: str = setting("system:serviceaccount:cniscope:cniscope-agent",
                                      "the agents' ServiceAccount, as TokenReview names it")
    tls_ca: str = setting("", "CA bundle for client certificates: mutual TLS (file)")
    tls_cert: str = setting("", "server certificate (file); empty: plaintext")
    tls_key: str = setting("", "server certificate's key (file)")
    metrics_listen: str = setting("", "serve Prometheus /metrics here, HOST:PORT (empty: off)")
    max_message_bytes: int = setting(4 * 1024 * 1024, "largest gRPC message accepted", "bytes")
    allow_cidrs: str = setting("198.18.0.0/15", "probe targets allowed besides agents (comma-separated CIDRs)")
    probe_rate: float = setting(5.0, "RunProbe calls admitted per client (token bucket rate)", "1/s")
    probe_burst: int = setting(20, "RunProbe burst per client (token bucket size)", "calls")
    max_node_series: int = setting(10_000, "distinct sample series in one node's live figures; new ones "
                                           "beyond it are left out (still stored) and the node named in a "
                                           "warning", "series")
    max_capability_bytes: int = setting(1024 * 1024, "largest capability report one node may send (larger: "
                                                     "refused, naming the node and the cap)", "bytes")
    retention_hours: float = setting(24.0, "samples older than this are deleted", "h")
    max_db_bytes: int = setting(1536 * 1024 * 1024, "the database's size bound (file and WAL): near it the "
                                "oldest raw samples become per-minute aggregates, then the oldest aggregates "
                                "and log events go; runs and probe results are kept", "bytes")
    log_level: str = setting("info", "log level", choices=LOG_LEVELS)
    scaling_namespace: str = setting("cniscope-probe", "where a service-scaling run creates its Services")
    lab: str | None = setting(None, "serve the lab NAME: service-scaling runs load kube-proxy-style rules into "
                                    "its node namespaces ('' = the default lab)", shown="not a lab", metavar="NAME")
    sa_token: str = setting("/var/run/secrets/kubernetes.io/serviceaccount/token",
                            "in-cluster service account token (file)")
    sa_ca: str = setting("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "in-cluster API CA (file)")


@dataclass(frozen=True)
class Setting:
    """What help and ``config show`` say about one setting."""

    name: str
    env: str
    type: str           # str | int | float | bool
    help: str
    unit: str
    default: str        # as shown
    choices: tuple[str, ...]
    repeat: bool
    metavar: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def env_name(name: str) -> str:
    return "CNISCOPE_" + name.upper()


def _type_name(typ: Any) -> str:
    for t in (bool, int, float):
        if typ is t or typ == t.__name__:
            return t.__name__
    return "str"


def settings(cls: type[Any]) -> list[Setting]:
    """Every setting of ``cls``, in declaration order."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("shown"):
            shown = str(meta["shown"])
        elif f.default is dataclasses.MISSING or f.default in ("", None):
            shown = "empty"
        else:
            shown = str(f.default)
        out.append(Setting(f.name, env_name(f.name), _type_name(hints[f.name]), str(meta.get("help", "")),
                           str(meta.get("unit", "")), shown, tuple(meta.get("choices", ())),
                           bool(meta.get("repeat", False)), str(meta.get("metavar", ""))))
    return out


def env_value(cls: type[Any], name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting from its ``CNISCOPE_*`` variable, else its declared default: for the code that reads
    a setting where it is used (inspectors, samplers) rather than from the config object."""
    e = os.environ if env is None else env
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise ConfigError(f"unknown setting {name!r}")
    if env_name(name) in e:
        return _convert(name, get_type_hints(cls)[name], e[env_name(name)])
    if f.default is dataclasses.MISSING and callable(f.default_factory):
        return f.default_factory()
    return f.default


def _convert(name: str, typ: Any, raw: str) -> Any:
    try:
        if typ is bool or typ == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if typ is int or typ == "int":
            return int(raw)
        if typ is float or typ == "float":
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"CNISCOPE_{name.upper()}: cannot read {raw!r} as {getattr(typ, '__name__', typ)}") from None


def load(cls: type[T], overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from defaults, then ``CNISCOPE_*`` variables, then non-None overrides."""
    return load_with_sources(cls, overrides, env)[0]


def load_with_sources(cls: type[T], overrides: Mapping[str, Any] | None = None,
                      env: Mapping[str, str] | None = None) -> tuple[T, dict[str, str]]:
    """``load``, and where each value came from: "default", "environment" or "flag"."""
    e = os.environ if env is None else env
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    sources = {f.name: "default" for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = env_name(f.name)
        if key in e:
            kwargs[f.name] = _convert(f.name, hints[f.name], e[key])
            sources[f.name] = "environment"
    for k, v in (overrides or {}).items():
        if v is not None:
            if k not in hints:
                raise ConfigError(f"unknown setting {k!r}")
            kwargs[k] = v
            sources[k] = "flag"
    return cls(**kwargs), sources


def read_token(token_file: str, env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: from ``token_file`` or ``CNISCOPE_TOKEN``; None when neither is set."""
    e = os.environ if env is None else env
    if token_file:
        try:
            tok = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not tok:
            raise ConfigError(f"token file {token_file} is empty")
        return tok
    tok = e.get("CNISCOPE_TOKEN", "").strip()
    return tok or None
