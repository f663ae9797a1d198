"""A small pure-Python kustomize renderer for the features ``daemonset/`` uses, so tests can check
exactly what ``kubectl apply -k`` would send without a kubectl binary.

Supported: ``resources`` (files and directories holding a kustomization), ``labels`` (pairs, with or
without selectors and templates), ``images`` (newName/newTag/digest) and ``patches`` with a ``target`` and an
RFC 6902 JSON patch body. Anything else in a kustomization is an error, so a manifest never uses a
feature this renderer would silently ignore.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

KNOWN_KEYS = {"apiVersion", "kind", "resources", "labels", "images", "patches"}


class KustomizeError(Exception):
    pass


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(directory: Path) -> list[Doc]:
    kfile = directory / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported keys {sorted(unknown)}")
    docs: list[Doc] = []
    for res in spec.get("resources", []):
        p = (directory / res).resolve()
        docs.extend(render(p) if p.is_dir() else load_docs(p))
    for patch in spec.get("patches", []):
        _apply_patch(docs, patch, directory)
    for lab in spec.get("labels", []):
        for d in docs:
            _add_labels(d, lab["pairs"], bool(lab.get("includeSelectors", False)),
                        bool(lab.get("includeTemplates", False)))
    for img in spec.get("images", []):
        for d in docs:
            for c in _containers(d):
                _set_image(c, img)
    return docs


def _containers(d: Doc) -> list[Doc]:
    spec = d.get("spec", {}).get("template", {}).get("spec")
    if spec is None and d.get("kind") == "Pod":
        spec = d.get("spec")
    if not spec:
        return []
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def image_name(ref: str) -> str:
    """The name part of an image reference, as kustomize matches it: without tag or digest
    (``localhost:5000/x:1.0@sha256:…`` → ``localhost:5000/x``; a registry's port is not a tag)."""
    ref = ref.split("@", 1)[0]
    head, sep, tail = ref.rpartition(":")
    return head if sep and "/" not in tail else ref


def _set_image(c: Doc, img: Doc) -> None:
    name = image_name(c["image"])
    if name != img["name"]:
        return
    new = img.get("newName", name)
    if "digest" in img:
        c["image"] = f"{new}@{img['digest']}"
    else:
        c["image"] = f"{new}:{img['newTag']}" if "newTag" in img else new


def _add_labels(d: Doc, pairs: dict[str, str], selectors: bool, templates: bool) -> None:
    """kustomize's ``labels``: always on the object; on pod templates with ``includeTemplates`` or
    ``includeSelectors``; on selectors with ``includeSelectors`` only."""
    d.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    tmpl = d.get("spec", {}).get("template")
    if isinstance(tmpl, dict) and (templates or selectors):
        tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if selectors:
        sel = d.get("spec", {}).get("selector")
        if isinstance(sel, dict):
            sel.setdefault("matchLabels", {}).update(pairs)


def _matches(d: Doc, target: Doc) -> bool:
    group, _, version = d.get("apiVersion", "").rpartition("/")
    checks = {"kind": d.get("kind"), "name": d.get("metadata", {}).get("name"),
              "namespace": d.get("metadata", {}).get("namespace"), "group": group, "version": version}
    return all(checks[k] == v for k, v in target.items() if k in checks)


def _apply_patch(docs: list[Doc], patch: Doc, directory: Path) -> None:
    body = patch.get("patch")
    if body is None and "path" in patch:
        body = (directory / patch["path"]).read_text()
    ops = yaml.safe_load(body or "")
    if not isinstance(ops, list):
        raise KustomizeError("only RFC 6902 (list of operations) patches are supported")
    hits = [d for d in docs if _matches(d, patch.get("target", {}))]
    if not hits:
        raise KustomizeError(f"patch target {patch.get('target')} matches nothing")
    for d in hits:
        for op in ops:
            _json_patch(d, op)


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json_patch(doc: Doc, op: Doc) -> None:
    parts = _pointer(op["path"])
    parent: Any = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    kind = op["op"]
    value = copy.deepcopy(op.get("value"))
    if kind == "test":   # RFC 6902: the patch applies only where the document holds this value
        got = parent[int(last)] if isinstance(parent, list) else parent.get(last)
        if got != value:
            raise KustomizeError(f"test of {op['path']} failed: {got!r} is not {value!r}")
        return
    if isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(idx, value)
        elif kind == "replace":
            parent[idx] = value
        elif kind == "remove":
            del parent[idx]
        else:
            raise KustomizeError(f"unsupported op {kind}")
    else:
        if kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise KustomizeError(f"replace of missing path {op['path']}")
            parent[last] = value
        elif kind == "remove":
            del parent[last]
        else:
            raise KustomizeError(f"unsupported op {kind}")
