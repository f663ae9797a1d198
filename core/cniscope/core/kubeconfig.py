"""Which Kubernetes API to talk to, found the way kubectl finds it (client-go's clientcmd rules).

- ``--kubeconfig FILE`` first; else every path in ``$KUBECONFIG`` (``:``-separated; missing files are
  skipped), merged; else ``~/.kube/config``; else, inside a pod, the pod's service account
  (in-cluster); else an error naming every place that was looked at.
- Merging follows kubectl: for clusters, users and contexts the first file that defines a name wins,
  and so does the first file that sets ``current-context``. Relative paths in a file (certificates,
  keys, token files, an exec plugin's command) are relative to that file.
- ``--context NAME`` picks a context; without it the merged ``current-context`` is used.

Pure functions over files and an environment mapping; the ``kubernetes`` package is not needed here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cniscope.core.errors import ConfigError, Unavailable

Doc = dict[str, Any]
NAMED = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))
# Path-valued fields kubectl resolves against the file that holds them (clientcmd ResolveLocalPaths).
PATH_FIELDS = {"cluster": ("certificate-authority",),
               "user": ("client-certificate", "client-key", "tokenFile")}


@dataclass(frozen=True)
class ApiTarget:
    """Where the API is and how it was chosen."""

    kind: str                       # "kubeconfig" or "in-cluster"
    files: tuple[str, ...] = ()     # the kubeconfig files merged, in order
    context: str = ""
    server: str = ""
    config: Doc | None = None       # the merged kubeconfig (kind "kubeconfig")

    def describe(self) -> str:
        if self.kind == "in-cluster":
            return f"the pod's service account (in-cluster, {self.server or 'no server'})"
        return f"context {self.context!r} ({self.server}) from {', '.join(self.files)}"


def candidate_files(env: Mapping[str, str], explicit: str = "") -> tuple[list[Path], str]:
    """The kubeconfig files to merge (existing ones only) and a phrase naming where they were looked for."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(f"--kubeconfig {explicit}: no such file")
        return [p], explicit
    if env.get("KUBECONFIG"):
        paths = [Path(_expand(s, env)) for s in env["KUBECONFIG"].split(os.pathsep) if s]
        return [p for p in paths if p.is_file()], f"$KUBECONFIG ({env['KUBECONFIG']})"
    home = env.get("HOME", "")
    if not home:
        return [], "~/.kube/config ($HOME is not set)"
    default = Path(home) / ".kube" / "config"
    return ([default] if default.is_file() else []), str(default)


def _expand(path: str, env: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        return env.get("HOME", "~") + path[1:]
    return path


def _load(path: Path) -> Doc:
    import yaml  # only where a kubeconfig is read: agents without a Kubernetes API never load it

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a Config object")
    return doc


def _resolve_paths(entry: Doc, section: str, base: Path) -> Doc:
    body = dict(entry.get(section) or {})
    for key in PATH_FIELDS.get(section, ()):
        if body.get(key) and not os.path.isabs(body[key]):
            body[key] = str(base / body[key])
    if section == "user" and isinstance(body.get("exec"), dict):
        ex = dict(body["exec"])
        cmd = ex.get("command", "")
        if "/" in cmd and not os.path.isabs(cmd):      # a bare name is looked up on $PATH
            ex["command"] = str(base / cmd)
        body["exec"] = ex
    return {**entry, section: body}


def merge(paths: list[Path]) -> Doc:
    """One kubeconfig from several, by kubectl's rules (first definition of a name wins)."""
    out: Doc = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    seen: dict[str, set[str]] = {key: set() for key, _ in NAMED}
    for path in paths:
        doc = _load(path)
        base = path.resolve().parent
        for key, section in NAMED:
            for entry in doc.get(key) or []:
                name = entry.get("name", "")
                if name in seen[key]:
                    continue
                seen[key].add(name)
                out[key].append(_resolve_paths(entry, section, base))
        if doc.get("current-context") and "current-context" not in out:
            out["current-context"] = doc["current-context"]
    return out


def _named(config: Doc, key: str, name: str) -> Doc | None:
    return next((e for e in config.get(key, []) if e.get("name") == name), None)


def select(config: Doc, context: str = "") -> tuple[str, str]:
    """(context name, server URL) that ``context`` (or the current context) points at."""
    names = [c.get("name", "") for c in config.get("contexts", [])]
    chosen = context or config.get("current-context", "")
    if not chosen:
        raise ConfigError("the kubeconfig sets no current-context; pass --context "
                          f"({', '.join(names) or 'it defines no contexts'})")
    ctx = _named(config, "contexts", chosen)
    if ctx is None:
        raise ConfigError(f"context {chosen!r} is not in the kubeconfig (known: {', '.join(names) or 'none'})")
    cluster_name = (ctx.get("context") or {}).get("cluster", "")
    cluster = _named(config, "clusters", cluster_name)
    if cluster is None:
        raise ConfigError(f"context {chosen!r} names cluster {cluster_name!r}, which the kubeconfig does not define")
    return chosen, str((cluster.get("cluster") or {}).get("server", ""))


def find(env: Mapping[str, str], context: str = "", explicit: str = "") -> ApiTarget:
    """Where the API is, kubectl's way; raises Unavailable naming the places looked at."""
    files, looked = candidate_files(env, explicit)
    if files:
        config = merge(files)
        name, server = select(config, context)
        return ApiTarget("kubeconfig", tuple(str(f) for f in files), name, server, config)
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    if host:
        if context:
            raise ConfigError(f"--context {context}: no kubeconfig found ({looked}); inside a pod only "
                              "the pod's service account is available")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return ApiTarget("in-cluster", server=server)
    raise Unavailable(f"no Kubernetes configuration: no kubeconfig at {looked}, and not inside a pod "
                      "(KUBERNETES_SERVICE_HOST is not set); use --kubeconfig, $KUBECONFIG or ~/.kube/config")
