"""Helpers for the pipeline tests: free ports, in-process collectors, test certificates, raw agent streams."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cniscope.api.v1 import agent_pb2
from cniscope.collector.server import Collector
from cniscope.core.config import CollectorConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_collector(tmp: Path, **cfg: Any) -> Collector:
    port = free_port()
    c = Collector(CollectorConfig(db=str(tmp / f"c{port}.db"), listen=f"127.0.0.1:{port}", **cfg))
    await c.start()
    return c


def address(c: Collector) -> str:
    return c.listen[0]


async def until(cond: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


class RawAgent:
    """A hand-driven AgentHub stream: send any message, read replies."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()

    async def messages(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        while True:
            m = await self.queue.get()
            if m is None:
                return
            yield m


# ---- certificates (cryptography; no openssl needed) ------------------------------------------------
def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca: tuple[Any, Any], cn: str, server: bool) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) signed by ``ca``; server certs name 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key, ca_cert = ca
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))
