"""`cniscope k8s preflight`: before `kubectl apply -k`, with the user's kubeconfig, check that the
install can work on this cluster; each check says pass / warn / fail and how to fix it; exit 1 on a
fail. The install is rendered with `kubectl kustomize` from --manifests (default daemonset/base)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

from cniscope.core.errors import CniscopeError, ConfigError, Unavailable

MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def render_install(directory: str) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k DIR` would send."""
    import yaml

    if not (Path(directory) / "kustomization.yaml").is_file():
        raise ConfigError(f"{directory} holds no kustomization.yaml (pass --manifests DIR)")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise Unavailable("kubectl is not on PATH (it renders the kustomization)")
    out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ConfigError(f"kubectl kustomize {directory}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def gather(ns: argparse.Namespace) -> Any:
    """Read everything the checks need; an unreadable part is kept as the error saying why."""
    from kubernetes import client

    from cniscope.agent.cluster_api import ClusterView
    from cniscope.cli import preflight_checks as pc
    from cniscope.core import cluster_cidrs, kubeapi, kubeconfig

    g = pc.Gathered(install=pc.attempt(lambda: render_install(ns.manifests)))
    target = pc.attempt(partial(kubeconfig.find, os.environ, ns.context, ns.kubeconfig))
    if isinstance(target, CniscopeError):
        g.version = target
        return g
    g.server = target.server
    api = pc.attempt(partial(kubeapi.client_for, target))
    if isinstance(api, CniscopeError):
        g.version = api
        return g
    g.version = pc.attempt(lambda: kubeapi.call(client.VersionApi(api).get_code, what="get /version"))
    if isinstance(g.version, CniscopeError):
        return g
    core = client.CoreV1Api(api)
    listed = pc.attempt(lambda: kubeapi.call(core.list_node, what="list nodes"))
    g.nodes = listed if isinstance(listed, CniscopeError) else (listed or {}).get("items", [])
    for name in ("cniscope", "cniscope-probe"):
        got = pc.attempt(partial(kubeapi.call, core.read_namespace, name, what=f"get namespace {name}"))
        g.namespaces[name] = None if isinstance(got, CniscopeError) else got
    authz = client.AuthorizationV1Api(api)
    if not isinstance(g.install, CniscopeError):
        for key in sorted({pc.access_key(o) for o in g.install}):
            verb, group, resource, namespace = key
            body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                                    "namespace": namespace}}}
            got = pc.attempt(partial(kubeapi.call, authz.create_self_subject_access_review, body,
                                     what=f"ask whether you may {pc.describe_access(key)}"))
            g.access[pc.describe_access(key)] = got if isinstance(got, CniscopeError) else bool(
                ((got or {}).get("status") or {}).get("allowed"))
    view = ClusterView(api)
    g.fingerprint = pc.attempt(view.fingerprint)
    objs = pc.attempt(view.cidr_objects)
    g.allow_list = objs if isinstance(objs, CniscopeError) else cluster_cidrs.discovered(objs)
    return g


def cmd_preflight(ns: argparse.Namespace) -> int:
    from cniscope.cli import preflight_checks as pc

    checks = pc.run_checks(gather(ns))
    if ns.output == "json":
        print(json.dumps(pc.to_json(checks), indent=2))
    else:
        for c in checks:
            print(f"{MARK[c.status]}  {c.name:<17} {c.message}")
            if c.fix and c.status != "pass":
                print(f"      {'':<17} fix: {c.fix}")
        fails = sum(c.status == "fail" for c in checks)
        warns = sum(c.status == "warn" for c in checks)
        print(f"\n{fails} fail, {warns} warn, {len(checks) - fails - warns} pass")
    return 1 if any(c.status == "fail" for c in checks) else 0


def register_k8s(ksub: Any) -> None:
    """``cniscope k8s preflight`` under the ``k8s`` subcommands."""
    from cniscope.cli.kubeconfig_flags import add_kubeconfig_flags

    p = ksub.add_parser("preflight", help="before installing: can cniscope run on this cluster? "
                                          "(pass/warn/fail with fixes; exit 1 on a fail)")
    p.add_argument("--manifests", default="daemonset/base",
                   help="the kustomization you will apply (default daemonset/base)")
    add_kubeconfig_flags(p)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_preflight)
