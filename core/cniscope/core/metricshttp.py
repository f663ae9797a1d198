"""A minimal asyncio HTTP endpoint for Prometheus ``/metrics`` (text format or OpenMetrics, by Accept).

It runs on the process's own event loop, so the exposition reads state without locks or threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from cniscope.core.errors import ConfigError
from cniscope.core.metric_units import base_unit
from cniscope.core.metrics_catalog import help_for

log = logging.getLogger("cniscope.metrics")

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
MAX_REQUEST = 8192


def metric_name(name: str, prefix: str = "cniscope_") -> str:
    """Any sample name → a valid Prometheus metric name with our prefix."""
    n = _NAME_BAD.sub("_", name)
    if not n.startswith(prefix):
        n = prefix + n
    return n


def label_name(name: str) -> str:
    n = _NAME_BAD.sub("_", name).replace(":", "_")
    if not n or n[0].isdigit() or n.startswith("__"):
        n = "l_" + n.lstrip("_")
    return n


def parse_listen(addr: str) -> tuple[str, int]:
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"metrics address {addr!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        self.registry = registry
        self.host, self.port = parse_listen(listen)
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror}") from None
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        log.info("serving Prometheus metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            if len(head) > MAX_REQUEST:
                raise ValueError("request too large")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = (lines[0].split(" ") + ["", "", ""])[:3]
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            if method not in ("GET", "HEAD"):
                await self._reply(writer, 405, "text/plain", b"method not allowed\n")
            elif path.split("?")[0] not in ("/metrics", "/"):
                await self._reply(writer, 404, "text/plain", b"try /metrics\n")
            else:
                encoder, ctype = choose_encoder(headers.get("accept", ""))
                body = encoder(self.registry)
                await self._reply(writer, 200, ctype, b"" if method == "HEAD" else body, len(body))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, ConnectionError):
            pass
        except Exception:  # an exposition bug never takes the process down
            log.exception("metrics request failed")
            with contextlib.suppress(Exception):
                await self._reply(writer, 500, "text/plain", b"internal error\n")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, code: int, ctype: str, body: bytes, length: int | None = None) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}[code]
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + body)
        await writer.drain()


HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def family_of(name: str, histograms: set[str]) -> tuple[str, str, str]:
    """A sample name → (family, type, suffix): ``x_total`` is a counter, ``x_bucket``/``_sum``/``_count``
    of a sampled histogram ``x`` belong to it, anything else is a gauge."""
    for part in HISTOGRAM_PARTS:
        if name.endswith(part) and name[: -len(part)] in histograms:
            return name[: -len(part)], "histogram", part
    if name.endswith("_total"):
        return name[: -len("_total")], "counter", "_total"
    return name, "gauge", ""


def gauge_families(rows: list[tuple[str, dict[str, str], float]], doc: str,
                   prefix: str = "cniscope_") -> list[object]:
    """(name, labels, value) rows → one family per metric in base units, every label set kept: gauges,
    counters for ``*_total`` samples, histograms for ``*_bucket`` (with ``le``), ``*_sum`` and ``*_count``
    (quantile samples beside a histogram are left out: ``histogram_quantile()`` reads the buckets)."""
    from prometheus_client.metrics_core import Metric

    named = [(metric_name(name, prefix), labels, value) for name, labels, value in rows]
    histograms = {n[: -len("_bucket")] for n, labels, _ in named if n.endswith("_bucket") and "le" in labels}
    fams: dict[str, Metric] = {}
    for n, labels, value in named:
        if n in histograms:  # a sampled histogram's own quantiles: histogram_quantile() over the buckets
            continue
        base, kind, part = family_of(n, histograms)
        exposed, factor = base_unit(base)
        fam = fams.get(exposed)
        if fam is None:
            fam = fams[exposed] = Metric(exposed, help_for(exposed, doc), kind)
        out = {label_name(k): v for k, v in labels.items()}
        if part == "_bucket":
            factor, out["le"] = 1.0, _scaled_le(labels["le"], factor)
        elif part == "_count":
            factor = 1.0
        fam.add_sample(exposed + part, out, float(value) * factor)
    return list(fams.values())


def _scaled_le(le: str, factor: float) -> str:
    try:
        return le if le in ("+Inf", "inf") else repr(float(le) * factor)
    except ValueError:
        return le
