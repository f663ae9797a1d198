"""The Kubernetes lab's PKI and kubeconfigs, generated with ``cryptography``.

The lab CA signs everything but the front proxy's client certificate: the API server's serving certificate (SANs: its lab address, the
``kubernetes`` Service's ClusterIP and names, loopback), etcd's serving certificate and the API
server's etcd client certificate, and one client certificate per identity (admin in
``system:masters``, ``system:kube-controller-manager``, ``system:kube-proxy`` and one
``system:node:<name>`` in ``system:nodes`` per lab node, so the Node authorizer and NodeRestriction
see the lab's kubelet stand-in exactly as they would see a kubelet). A separate front-proxy CA signs
the API server's aggregation-layer client certificate, as kubeadm sets it up, so delegated
authentication in the controller manager (and aggregated APIs) finds its request-header CA. The
service-account key pair
(ES256) signs ServiceAccount tokens. Keys are ECDSA P-256 and files are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cniscope.core.errors import LabError

VALIDITY = dt.timedelta(days=365)
BACKDATE = dt.timedelta(hours=1)   # tolerate a little clock skew between processes and host


def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise LabError("the Kubernetes lab needs the 'cryptography' package (Debian: python3-cryptography; "
                       "pip install cryptography)") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    """A client certificate to issue: file stem, common name, organizations."""

    stem: str
    cn: str
    orgs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paths:
    """Where the PKI of one lab lives (``<lab dir>/kube/pki``)."""

    root: Path

    @property
    def ca_crt(self) -> Path:
        return self.crt("ca")

    @property
    def ca_key(self) -> Path:
        return self.key("ca")

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    def crt(self, stem: str) -> Path:
        return self.root / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.root / f"{stem}.key"


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _new_key() -> Any:
    _x509, _hashes, _ser, ec, _eku, _name = _crypto()
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    _x509, _hashes, ser, _ec, _eku, _name = _crypto()
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,  # type: ignore[no-any-return]
                             ser.NoEncryption())


def _name(cn: str, orgs: Sequence[str] = ()) -> Any:
    x509, _hashes, _ser, _ec, _eku, NameOID = _crypto()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


class CA:
    """A lab CA (``<stem>.crt``/``<stem>.key``): loaded from disk when present, else created."""

    def __init__(self, paths: Paths, *, lab_name: str, stem: str = "ca") -> None:
        x509, hashes, ser, _ec, _eku, _name_oid = _crypto()
        self.paths = paths
        crt_path, key_path = paths.crt(stem), paths.key(stem)
        if crt_path.exists() and key_path.exists():
            self.cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
            self.key = ser.load_pem_private_key(key_path.read_bytes(), password=None)
            return
        self.key = _new_key()
        subject = _name(f"cniscope-lab-{lab_name}-{stem}", ("cniscope lab",))
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _write(key_path, _key_pem(self.key))
        _write(crt_path, self.cert.public_bytes(ser.Encoding.PEM), 0o644)

    def issue(self, stem: str, cn: str, *, orgs: Sequence[str] = (), server: bool = False,
              client: bool = False, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> tuple[Path, Path]:
        """Write ``<stem>.crt``/``<stem>.key`` (kept when already there); return their paths."""
        x509, hashes, ser, _ec, EKU, _name_oid = _crypto()
        crt, keyp = self.paths.crt(stem), self.paths.key(stem)
        if crt.exists() and keyp.exists():
            return crt, keyp
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        usages = ([EKU.SERVER_AUTH] if server else []) + ([EKU.CLIENT_AUTH] if client else [])
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs)).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        alt: list[Any] = [x509.DNSName(d) for d in dns]
        alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if alt:
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        _write(keyp, _key_pem(key))
        _write(crt, cert.public_bytes(ser.Encoding.PEM), 0o644)
        return crt, keyp


def service_account_keys(paths: Paths) -> tuple[Path, Path]:
    """The ServiceAccount token signing pair (ES256): private ``sa.key``, public ``sa.pub``."""
    _x509, _hashes, ser, _ec, _eku, _name_oid = _crypto()
    if not (paths.sa_key.exists() and paths.sa_pub.exists()):
        key = _new_key()
        _write(paths.sa_key, _key_pem(key))
        _write(paths.sa_pub, key.public_key().public_bytes(
            ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return paths.sa_key, paths.sa_pub


def kubeconfig(path: Path, *, server: str, ca: Path, cert: Path, key: Path, user: str,
               cluster: str = "cniscope-lab") -> Path:
    """Write a kubeconfig (JSON is YAML) naming the lab's CA and one client certificate by path."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
        "current-context": f"{user}@{cluster}",
        "preferences": {},
    }
    _write(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path
