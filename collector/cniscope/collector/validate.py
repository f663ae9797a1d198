"""Checks on what agents send. A hostile or broken message is refused with a gRPC status and a log
line; the collector keeps serving everyone else."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping

from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.core import netpolicy
from cniscope.core.errors import ValidationError

NODE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
MAX_ID = 128
MAX_SAMPLES_PER_BATCH = 50_000
MAX_LABELS = 32
MAX_LABEL_LEN = 256
MAX_TEXT = 64 * 1024              # log messages, errors, probe detail JSON
MAX_UNIT_DETAIL = 1024 * 1024     # one inspection unit's typed findings, serialised
MAX_REPLAY_BOOTS = 16
MAX_UNITS = 256
READINESS = frozenset(common_pb2.Readiness.values())


class Refused(Exception):
    """The message is refused; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _bad(msg: str) -> Refused:
    return Refused("INVALID_ARGUMENT", msg)


def _check_id(what: str, value: str) -> None:
    if not value or len(value) > MAX_ID or not value.isprintable():
        raise _bad(f"{what} must be 1-{MAX_ID} printable characters")


def _check_labels(what: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise _bad(f"{what}: {len(labels)} labels (cap {MAX_LABELS})")
    for k in labels:  # keys then lookups: a protobuf map's items() goes through a slow generic view
        if not k or len(k) > MAX_LABEL_LEN or len(labels[k]) > MAX_LABEL_LEN:
            raise _bad(f"{what}: label {k[:32]!r} empty or longer than {MAX_LABEL_LEN} characters")


def _check_address(what: str, value: str) -> None:
    """An agent's advertised address must be a plain IP that is safe to send probes to."""
    if not value:
        return
    try:
        ip = netpolicy.parse_address(value)
    except ValidationError as exc:
        raise _bad(f"hello: {what} {value[:64]!r}: {exc}") from None
    if ip is None:
        raise _bad(f"hello: {what} {value[:64]!r} is not an IP address")
    why = netpolicy.forbidden_reason(ip)
    if why:
        raise Refused("PERMISSION_DENIED", f"hello: {what} {ip} refused: {why}")


def check_capabilities(rep: common_pb2.CapabilityReport) -> None:
    if len(rep.items) > MAX_UNITS or len(rep.units) > MAX_UNITS:
        raise _bad(f"capability report with more than {MAX_UNITS} items or units")
    for it in rep.items:
        if it.state not in READINESS:
            raise _bad(f"capability {it.name[:64]!r}: unknown readiness value {it.state}")
        if not it.name or len(it.name) > 200 or len(it.reason) > MAX_TEXT:
            raise _bad("capability item name empty or too long")
    for u in rep.units:
        if not u.name or len(u.name) > 200 or len(u.error) > MAX_TEXT or len(u.summary) > MAX_TEXT:
            raise _bad("unit report name empty or a field too long")
        case = u.WhichOneof("detail")
        if case is not None and case != u.name:
            raise _bad(f"unit {u.name[:64]!r} carries the findings of unit {case!r}")
        if case is not None and getattr(u, case).ByteSize() > MAX_UNIT_DETAIL:
            raise _bad(f"unit {u.name[:64]!r}: findings larger than {MAX_UNIT_DETAIL} bytes")
        if not math.isfinite(u.duration_seconds) or u.duration_seconds < 0:
            raise _bad(f"unit {u.name[:64]!r}: duration must be a finite, non-negative number")
    if rep.HasField("unfinished"):
        uf = rep.unfinished
        if len(uf.stale) > MAX_UNITS or any(not n or len(n) > 200 for n in uf.stale) or len(uf.running) > 200:
            raise _bad("unfinished capability report: unit names empty, too long or too many")
        if not math.isfinite(uf.running_seconds) or uf.running_seconds < 0:
            raise _bad("unfinished capability report: running time must be a finite, non-negative number")


def check_hello(h: agent_pb2.Hello) -> None:
    if not h.node or not NODE_RE.match(h.node):
        raise _bad(f"hello: node name {h.node[:64]!r} is not a valid node name")
    if not h.boot_id or len(h.boot_id) > MAX_ID or not h.boot_id.isprintable():
        raise _bad("hello: boot_id must be 1-128 printable characters")
    for label, value in (("agent_version", h.agent_version), ("host_ip", h.host_ip), ("pod_ip", h.pod_ip)):
        if len(value) > 253 or not value.isprintable():
            raise _bad(f"hello: {label} longer than 253 characters or not printable")
    _check_address("host_ip", h.host_ip)
    _check_address("pod_ip", h.pod_ip)
    _check_labels("hello", h.labels)
    if len(h.replay_boot_ids) > MAX_REPLAY_BOOTS:
        raise _bad(f"hello: {len(h.replay_boot_ids)} replay boots (cap {MAX_REPLAY_BOOTS})")
    for b in h.replay_boot_ids:
        _check_id("hello: replay boot id", b)
    if h.time_unix_nano < 0:
        raise _bad("hello: negative timestamp")
    if h.HasField("capabilities"):
        check_capabilities(h.capabilities)


def check_batch(b: agent_pb2.Batch, boot_id: str, replay_boots: Collection[str] = ()) -> None:
    if b.boot_id != boot_id and b.boot_id not in replay_boots:
        raise _bad(f"batch boot_id {b.boot_id[:16]!r} is neither the session's nor an announced earlier boot")
    if b.seq == 0:
        raise _bad("batch seq must start at 1")
    if b.seq >= 2**63:
        raise _bad("batch seq out of range")
    if b.time_unix_nano < 0:
        raise _bad("batch timestamp is negative")
    if len(b.samples) > MAX_SAMPLES_PER_BATCH:
        raise _bad(f"batch has {len(b.samples)} samples (cap {MAX_SAMPLES_PER_BATCH})")
    total = 0.0
    for s in b.samples:  # the hot loop of ingest: one pass, each field read once
        name = s.name
        if not name or len(name) > 200:
            raise _bad("sample name empty or longer than 200 characters")
        total += s.value
        if s.time_unix_nano < 0:
            raise _bad(f"sample {name[:64]} has a negative timestamp")
        labels = s.labels
        if labels:  # checked inline (a call and its message per sample cost half of this loop); a
            # failing sample is then explained by _check_labels
            if len(labels) > MAX_LABELS:
                _check_labels(f"sample {name[:64]}", labels)
            for k in labels:
                if not k or len(k) > MAX_LABEL_LEN or len(labels[k]) > MAX_LABEL_LEN:
                    _check_labels(f"sample {name[:64]}", labels)
    if not math.isfinite(total):  # NaN or ±inf somewhere (or finite values summing past the range)
        for s in b.samples:
            if not math.isfinite(s.value):
                raise _bad(f"sample {s.name[:64]} has a non-finite value")
    for r in b.probe_results:
        _check_id("probe result probe_id", r.probe_id)
        if len(r.kind) > 32 or len(r.error) > MAX_TEXT or len(r.detail_json) > 4 * MAX_TEXT:
            raise _bad(f"probe result {r.probe_id[:32]}: a field is too long")
        for k, v in r.figures.items():
            if not k or len(k) > 200:
                raise _bad("probe result figure name empty or too long")
            if not math.isfinite(v):
                raise _bad(f"probe result figure {k[:64]} is not finite")
            if v < 0:
                raise _bad(f"probe result figure {k[:64]} is negative ({v})")
    for e in b.events:
        if e.level not in ("info", "warning", "error", "debug"):
            raise _bad(f"log event level {e.level[:16]!r} is unknown")
        if len(e.message) > MAX_TEXT or len(e.node) > 253:
            raise _bad("log event message too long")
