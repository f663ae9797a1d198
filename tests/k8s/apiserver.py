"""A small stand-in for the Kubernetes API server, on 127.0.0.1, serving recorded API objects.

There is no API server on this machine, so the kubernetes client talks to this over real HTTP: the
client's config loading, bearer-token header, query parameters, watch streaming (newline-delimited
JSON events) and error handling all run as they would against a cluster. Objects come from
tests/fixtures/k8s (each file says where its shape comes from); errors are ``Status`` objects in the
API server's shape (``kind: Status``, ``reason``, ``code``). SelfSubjectAccessReviews are answered
from ``denied_access`` (allowed unless listed), in the shape of authorization.k8s.io/v1.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "k8s"
SA_USER = "system:serviceaccount:cniscope:cniscope-agent"


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _labels_match(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels", {}) or {}
    for term in filter(None, selector.split(",")):
        k, _, v = term.partition("=")
        if labels.get(k) != v:
            return False
    return True


def _fields_match(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        k, _, v = term.partition("=")
        cur: Any = obj
        for part in k.split("."):
            cur = cur.get(part, {}) if isinstance(cur, dict) else {}
        if cur != v:
            return False
    return True


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str


@dataclass
class FakeApiServer:
    token: str = "test-token-1234"
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    pods: list[dict[str, Any]] = field(default_factory=list)
    services: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    endpointslices: list[dict[str, Any]] = field(default_factory=list)
    denied_access: set[tuple[str, str, str, str]] = field(default_factory=set)  # SSAR (verb, group, resource, ns)
    events: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    requests: list[Request] = field(default_factory=list)
    resource_version: int = 1000

    def __post_init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.events.put(None)
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "sa", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "sa"}}],
        }))
        return path

    def load(self, fixture: str) -> FakeApiServer:
        self.objects.update(load_fixture(fixture)["objects"])
        return self

    # ---- request handling ----------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                q = parse_qs(url.query)
                srv.requests.append(Request(method, url.path, q, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != f"Bearer {srv.token}":
                    self._send(401, status(401, "Unauthorized", "Unauthorized"))
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, out = srv.route(method, url.path.rstrip("/") or "/", q, body)   # /version/ is /version
                if out is None:
                    self._stream(q)
                    return
                self._send(code, out)

            def _stream(self, q: dict[str, list[str]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                timeout = float(q.get("timeoutSeconds", ["5"])[0])
                label, fsel = q.get("labelSelector", [""])[0], q.get("fieldSelector", [""])[0]
                try:
                    while True:
                        try:
                            ev = srv.events.get(timeout=timeout)
                        except queue.Empty:
                            break
                        if ev is None:
                            break
                        obj = ev["object"]
                        if ev["type"] != "ERROR" and not (_labels_match(obj, label) and _fields_match(obj, fsel)):
                            continue
                        line = json.dumps(ev).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                        if ev["type"] == "ERROR":   # the API server ends a watch after its error event
                            break
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler

    def route(self, method: str, path: str, q: dict[str, list[str]],
              body: dict[str, Any] | None) -> tuple[int, dict[str, Any] | None]:
        parts = path.strip("/").split("/")
        name = parts[-1]
        kind = parts[-2] if len(parts) >= 2 else ""
        if path in self.forbidden:
            ns = re.search(r"/namespaces/([^/]+)/", path)
            where = f' in the namespace "{ns.group(1)}"' if ns else ""
            return 403, status(403, "Forbidden", f'{kind} "{name}" is forbidden: User "{SA_USER}" cannot '
                                                  f'{method.lower()} resource "{kind}" in API group ""{where}')
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST" and body:
            a = body["spec"]["resourceAttributes"]
            allowed = (a.get("verb", ""), a.get("group", ""), a.get("resource", ""),
                       a.get("namespace", "")) not in self.denied_access
            return 201, {**body, "status": {"allowed": allowed, **({} if allowed else {"reason": ""})}}
        if path == "/apis/apps/v1/daemonsets" and method == "GET":   # every namespace's, by label
            sel = q.get("labelSelector", [""])[0]
            items = [o for k, o in sorted(self.objects.items())
                     if re.fullmatch(r"/apis/apps/v1/namespaces/[^/]+/daemonsets/[^/]+", k) and _labels_match(o, sel)]
            return 200, {"kind": "DaemonSetList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "1"},
                         "items": items}
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
        if m and method == "GET":
            if q.get("watch", [""])[0] in ("true", "1"):
                return 200, None
            items = [p for p in self.pods if p["metadata"].get("namespace") == m.group(1)
                     and _labels_match(p, q.get("labelSelector", [""])[0])
                     and _fields_match(p, q.get("fieldSelector", [""])[0])]
            return 200, {"kind": "PodList", "apiVersion": "v1",
                         "metadata": {"resourceVersion": str(self.resource_version)}, "items": items}
        m = re.fullmatch(r"/apis/discovery.k8s.io/v1/namespaces/([^/]+)/endpointslices", path)
        if m and method == "GET":
            items = [e for e in self.endpointslices if e["metadata"].get("namespace") == m.group(1)
                     and _labels_match(e, q.get("labelSelector", [""])[0])]
            return 200, {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                         "metadata": {"resourceVersion": "1"}, "items": items}
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?", path)
        if m and not (method == "GET" and path in self.objects):   # a recorded Service is served as is
            return self._services(method, m.group(1), m.group(2), q, body)
        if method == "GET" and path in self.objects:
            obj = self.objects[path]
            sel = q.get("labelSelector", [""])[0]
            if sel and isinstance(obj.get("items"), list):            # a recorded list, filtered like the API does
                return 200, {**obj, "items": [i for i in obj["items"] if _labels_match(i, sel)]}
            return 200, obj
        return 404, status(404, "NotFound", f'{kind} "{name}" not found')

    def _services(self, method: str, ns: str, name: str | None, q: dict[str, list[str]],
                  body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        store = self.services.setdefault(ns, {})
        if method == "GET" and name is None:
            sel = q.get("labelSelector", [""])[0]
            items = [s for s in store.values() if _labels_match(s, sel)]
            return 200, {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                         "items": items}
        if method == "POST" and body is not None:
            n = body["metadata"]["name"]
            if n in store:
                return 409, status(409, "AlreadyExists", f'services "{n}" already exists')
            self.resource_version += 1
            obj = {**body, "metadata": {**body["metadata"], "uid": f"uid-{n}",
                                        "resourceVersion": str(self.resource_version)},
                   "spec": {**body["spec"], "clusterIP": f"198.18.64.{len(store) % 250 + 1}"}}
            store[n] = obj
            return 201, obj
        if method == "GET" and name:
            if name not in store:
                return 404, status(404, "NotFound", f'services "{name}" not found')
            return 200, store[name]
        if method == "DELETE" and name:
            if name not in store:
                return 404, status(404, "NotFound", f'services "{name}" not found')
            del store[name]
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        return 405, status(405, "MethodNotAllowed", "method not allowed")
