"""Reaching the Kubernetes API, for the agent and the collector only.

The ``kubernetes`` package (extra ``k8s``) is imported inside these functions, never at module level,
so ``cniscope --help`` and the lab never load it. Without an API server (the lab, a laptop) nothing
here is called: :func:`wanted` says no and callers fall back to what they see locally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from cniscope.core import kubeconfig as kubeconfig_rules
from cniscope.core.config import AgentConfig, env_value
from cniscope.core.errors import CniscopeError, ConfigError, Unavailable

TIMEOUT = 5.0


def wanted(mode: str, env: Mapping[str, str] | None = None) -> bool:
    """Use the API? ``on``: always; ``off``: never; ``auto``: inside a pod, or when $KUBECONFIG names a
    kubeconfig (a ``~/.kube/config`` alone does not switch a lab agent over to a cluster)."""
    e = os.environ if env is None else env
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"CNISCOPE_KUBERNETES must be auto, on or off, not {mode!r}")
    if mode != "auto":
        return mode == "on"
    return bool(e.get("KUBERNETES_SERVICE_HOST") or e.get("KUBECONFIG"))


def api_client(env: Mapping[str, str] | None = None, *, context: str = "", kubeconfig: str = "") -> Any:
    """A ``kubernetes.client.ApiClient`` for the API kubectl would use (see :mod:`cniscope.core.kubeconfig`):
    ``kubeconfig``, else the merged ``$KUBECONFIG`` paths, else ``~/.kube/config``, else the pod's
    service account; ``context`` picks a kubeconfig context."""
    e = os.environ if env is None else env
    return client_for(kubeconfig_rules.find(e, context, kubeconfig), e)


def client_for(target: kubeconfig_rules.ApiTarget, env: Mapping[str, str] | None = None) -> Any:
    """The ``ApiClient`` for a target found by :func:`cniscope.core.kubeconfig.find`."""
    e = os.environ if env is None else env
    try:
        from kubernetes import client, config
    except ImportError:
        raise Unavailable("the kubernetes package is not installed (pip install 'cniscope[k8s]')") from None
    cfg = client.Configuration()
    try:
        if target.kind == "kubeconfig":
            config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
                target.config, context=target.context, client_configuration=cfg, persist_config=False)
        else:
            loader = config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=env_value(AgentConfig, "sa_token", e),  # the same defaults as the
                cert_filename=env_value(AgentConfig, "sa_ca", e),       # kubernetes package's in-cluster loader
                environ=e,
            )
            loader.load_and_set(cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise Unavailable(f"no Kubernetes configuration: {exc}") from None
    cfg.retries = 1
    return client.ApiClient(cfg)


def call(fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> dict[str, Any] | None:
    """Run one API call for raw JSON; 404 → None, 401/403 → Unavailable saying which grant is missing."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        resp = fn(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
        data: dict[str, Any] = json.loads(resp.data)
        return data
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status in (401, 403):
            raise Unavailable(f"{what}: {exc.status} {_message(exc) or exc.reason}") from None
        if exc.status == 0:
            raise Unavailable(f"{what}: API server{_server(fn)} unreachable ({exc.reason})") from None
        raise CniscopeError(f"{what}: API server answered {exc.status} {_message(exc) or exc.reason}") from None
    except (HTTPError, OSError) as exc:
        raise Unavailable(f"{what}: API server{_server(fn)} unreachable ({_reason(exc)})") from None


def _server(fn: Callable[..., Any]) -> str:
    """`` at https://host:port`` for a bound API method, so an unreachable server is named."""
    host = getattr(getattr(getattr(getattr(fn, "__self__", None), "api_client", None), "configuration", None),
                   "host", "")
    return f" at {host}" if host else ""


def _reason(exc: BaseException) -> str:
    """The innermost cause of a urllib3 failure (connection refused, name not resolved, timeout)."""
    inner: BaseException = exc
    while getattr(inner, "reason", None) is not None and isinstance(inner.reason, BaseException):  # type: ignore[attr-defined]
        inner = inner.reason  # type: ignore[attr-defined]
    text = str(inner)
    for known in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                  "certificate verify failed"):
        if known.lower() in text.lower():
            return known.lower() if known != "certificate verify failed" else "TLS: " + known
    return type(inner).__name__


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""
