"""One typed config object per process; every setting is also a ``CNISCOPE_*`` environment variable.

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


@dataclass
class AgentConfig:
    node: str = field(default_factory=socket.gethostname)
    collector: str = DEFAULT_COLLECTOR
    host_ip: str = ""
    pod_ip: str = ""
    pod_netns: str = ""              # path to the probe pod's netns (/run/netns/X or /proc/PID/ns/net)
    sample_interval: float = 5.0     # seconds between sample batches
    mesh_interval: float = 30.0      # seconds between light-mesh RTT rounds (0: off)
    mesh_fanout: int = 8             # peers per mesh round
    spool_max_batches: int = 10_000
    spool_max_bytes: int = 32 * 1024 * 1024
    spool_path: str = ""             # optional on-disk spool file
    backoff_initial: float = 1.0
    backoff_factor: float = 1.6
    backoff_max: float = 60.0
    backoff_jitter: float = 0.2
    keepalive_time: float = 20.0     # seconds between HTTP/2 pings on an idle link
    keepalive_timeout: float = 10.0
    target_port: int = 7411          # TCP accept-and-close + HTTP echo live on this and +1
    iperf_port: int = 5201
    token_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    metrics_listen: str = ""         # e.g. "0.0.0.0:9471"; empty: off
    allow_cidrs: str = "198.18.0.0/15"
    log_level: str = "info"
    health_listen: str = ""          # grpc.health.v1 for Kubernetes probes, e.g. "0.0.0.0:9472"; empty: off
    kubernetes: str = "auto"         # auto: use the API when in a cluster (or KUBECONFIG set); on; off
    probe_namespace: str = "cniscope-probe"   # where this node's probe pod runs
    probe_selector: str = "app.kubernetes.io/name=cniscope-probe"
    probe_pod_recheck: float = 30.0  # seconds between checks that the probe pod is still the same one
    capabilities_budget: float = 5.0  # a refresh still running after this answers first with what has finished


@dataclass
class CollectorConfig:
    listen: str = "127.0.0.1:7400"
    db: str = "cniscope.db"
    stale_after: float = 15.0        # seconds of silence before a node shows as stale
    token_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    metrics_listen: str = ""
    max_message_bytes: int = 4 * 1024 * 1024
    allow_cidrs: str = "198.18.0.0/15"
    probe_rate: float = 5.0          # RunProbe calls per second (token bucket)
    probe_burst: int = 20
    retention_hours: float = 24.0
    log_level: str = "info"
    scaling_namespace: str = "cniscope-probe"  # where a service-scaling run creates its Services


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
    e = os.environ if env is None else env
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = "CNISCOPE_" + f.name.upper()
        if key in e:
            kwargs[f.name] = _convert(f.name, hints[f.name], e[key])
    for k, v in (overrides or {}).items():
        if v is not None:
            if k not in hints:
                raise ConfigError(f"unknown setting {k!r}")
            kwargs[k] = v
    return cls(**kwargs)


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
