"""Checks on what agents send. A hostile or broken message is refused with a gRPC status."""

from __future__ import annotations

import math
import re

from cniscope.api.v1 import agent_pb2

NODE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
MAX_ID = 128
MAX_SAMPLES_PER_BATCH = 50_000


class Refused(Exception):
    """The message is refused; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_hello(h: agent_pb2.Hello) -> None:
    if not h.node or not NODE_RE.match(h.node):
        raise Refused("INVALID_ARGUMENT", f"hello: node name {h.node[:64]!r} is not a valid node name")
    if not h.boot_id or len(h.boot_id) > MAX_ID or not h.boot_id.isprintable():
        raise Refused("INVALID_ARGUMENT", "hello: boot_id must be 1-128 printable characters")
    for label, value in (("agent_version", h.agent_version), ("host_ip", h.host_ip), ("pod_ip", h.pod_ip)):
        if len(value) > 253:
            raise Refused("INVALID_ARGUMENT", f"hello: {label} longer than 253 characters")


def check_batch(b: agent_pb2.Batch, boot_id: str) -> None:
    if b.boot_id != boot_id:
        raise Refused("INVALID_ARGUMENT", f"batch boot_id {b.boot_id[:16]!r} differs from the session's")
    if b.seq == 0:
        raise Refused("INVALID_ARGUMENT", "batch seq must start at 1")
    if len(b.samples) > MAX_SAMPLES_PER_BATCH:
        raise Refused("INVALID_ARGUMENT", f"batch has {len(b.samples)} samples (cap {MAX_SAMPLES_PER_BATCH})")
    for s in b.samples:
        if not s.name or len(s.name) > 200:
            raise Refused("INVALID_ARGUMENT", "sample name empty or longer than 200 characters")
        if not math.isfinite(s.value):
            raise Refused("INVALID_ARGUMENT", f"sample {s.name[:64]} has a non-finite value")
    for r in b.probe_results:
        if not r.probe_id or len(r.probe_id) > MAX_ID:
            raise Refused("INVALID_ARGUMENT", "probe result without a valid probe_id")
        for k, v in r.figures.items():
            if not math.isfinite(v):
                raise Refused("INVALID_ARGUMENT", f"probe result figure {k[:64]} is not finite")
