"""Where probes may send packets: known peer addresses, or inside configured allow-list CIDRs.

Addresses are normalised first (``0xa9fea9fe``, ``2852039166``, ``[::ffff:a.b.c.d]`` all become the
IPv4 address they mean) and names are resolved before the check, so no spelling slips through.
Loopback, link-local (most clouds' metadata address lives there), every cloud's instance metadata and
host-agent address outside link-local (``METADATA``: AWS's IPv6 ``fd00:ec2::254``, GCP's
``fd20:ce::254``, Alibaba's ``100.100.100.200``, Azure's wire server, Oracle's legacy one),
multicast, unspecified and reserved addresses are refused always — even when an agent advertises one
as its own address; a known peer's address is exempt only from the allow-list.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from cniscope.core.errors import ForbiddenTarget, ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64 = ipaddress.ip_network("64:ff9b::/96")
LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")

# Instance metadata, credentials and host-agent endpoints that are not link-local (169.254.0.0/16 and
# fe80::/10 are refused as a whole: AWS/GCP/Azure/Oracle/DigitalOcean 169.254.169.254, ECS
# 169.254.170.2, Tencent 169.254.0.23 ...).
METADATA = {
    ipaddress.ip_network("fd00:ec2::/32"): "AWS instance metadata, DNS and time over IPv6",
    ipaddress.ip_network("fd20:ce::254/128"): "GCP instance metadata over IPv6",
    ipaddress.ip_network("100.100.100.200/32"): "Alibaba Cloud instance metadata",
    ipaddress.ip_network("168.63.129.16/32"): "Azure wire server, the host agent",
    ipaddress.ip_network("192.0.0.192/32"): "Oracle Cloud legacy instance metadata",
}


def parse_cidrs(spec: str | Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        s = item.strip()
        if not s:
            continue
        try:
            out.append(ipaddress.ip_network(s, strict=False))
        except ValueError:
            raise ValidationError(f"allow-list entry {s!r} is not a CIDR") from None
    return out


def parse_address(text: str) -> IPAddress | None:
    """Any literal spelling of an IP address → the address; None when it is not a literal."""
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    if "%" in s:
        raise ForbiddenTarget(f"scoped address {text!r} refused")
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        ip = None
    if ip is None:
        # inet_aton spellings: 0xa9fea9fe, 2852039166, 0251.0376.0251.0376, 169.254.43518
        try:
            packed = socket.inet_aton(s)
        except OSError:
            return None
        if s.replace(".", "").isalpha():
            return None
        ip = ipaddress.IPv4Address(packed)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            return mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(ip.packed[12:])
        if ip.packed[:12] == b"\x00" * 12 and not ip.is_unspecified and not ip.is_loopback:
            return ipaddress.IPv4Address(ip.packed[12:])  # deprecated IPv4-compatible form
    return ip


def resolve(text: str) -> list[IPAddress]:
    lit = parse_address(text)
    if lit is not None:
        return [lit]
    if not text or len(text) > 253:
        raise ValidationError(f"target {text!r} is not an address or a host name")
    try:
        infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ValidationError(f"cannot resolve {text!r}: {exc.strerror}") from None
    out: list[IPAddress] = []
    for info in infos:
        a = parse_address(str(info[4][0]))
        if a is not None and a not in out:
            out.append(a)
    if not out:
        raise ValidationError(f"{text!r} resolved to no address")
    return out


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why no probe may ever go to ``ip`` (None when it may, subject to the allow-list)."""
    return _special(ip)


def _special(ip: IPAddress) -> str | None:
    for net, what in METADATA.items():
        if ip.version == net.version and ip in net:
            return f"cloud metadata ({what})"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata lives here)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_reserved and ip not in LAB_RANGE:
        return "reserved"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("0.0.0.0/8"):
        return "this-network (0/8)"
    if ip.version == 4 and int(ip) == 0xFFFFFFFF:
        return "broadcast"
    return None


def check_target(text: str, peer_addresses: Iterable[str], allow: str | Iterable[str]) -> str:
    """Return the address to use, or raise ForbiddenTarget saying why."""
    peers = set()
    for p in peer_addresses:
        pa = parse_address(p) if p else None
        if pa is not None:
            peers.add(pa)
    nets = parse_cidrs(allow)
    addrs = resolve(text)
    for ip in addrs:
        why = _special(ip)
        if why:
            raise ForbiddenTarget(f"target {text!r} → {ip} refused: {why}")
        if ip in peers:
            continue
        if not any(ip.version == n.version and ip in n for n in nets):
            raise ForbiddenTarget(
                f"target {text!r} → {ip} is neither a known agent nor inside the allow-list "
                f"({', '.join(str(n) for n in nets) or 'empty'})"
            )
    return str(addrs[0])
