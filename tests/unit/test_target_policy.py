"""Every spelling of a forbidden address is refused before any packet leaves."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from cniscope.core import netpolicy
from cniscope.core.errors import ForbiddenTarget, ValidationError

ALLOW = "198.18.0.0/15"
METADATA_FORMS = [
    "169.254.169.254", "[::ffff:169.254.169.254]", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe",
    "0xa9fea9fe", "0xA9FEA9FE", "2852039166", "0251.0376.0251.0376", "169.254.43518", "0xa9.0xfe.0xa9.0xfe",
    " 169.254.169.254 ", "2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe", "::169.254.169.254",
]
LOOPBACK_FORMS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "017700000001", "[::1]", "::1",
                  "::ffff:127.0.0.1", "localhost"]
OTHER_FORMS = ["0", "0.0.0.0", "::", "169.254.0.1", "fe80::1", "fe80::1%eth0", "224.0.0.1", "ff02::1",
               "255.255.255.255", "0.1.2.3", "10.0.0.1", "8.8.8.8", "2001:db8::1"]


@pytest.mark.parametrize("target", METADATA_FORMS)
def test_metadata_address_in_every_spelling_is_refused(target: str) -> None:
    with pytest.raises(ForbiddenTarget, match="link-local"):
        netpolicy.check_target(target, [], ALLOW)


@pytest.mark.parametrize("target", LOOPBACK_FORMS)
def test_loopback_in_every_spelling_is_refused(target: str) -> None:
    with pytest.raises(ForbiddenTarget, match="loopback"):
        netpolicy.check_target(target, [], ALLOW)


@pytest.mark.parametrize("target", OTHER_FORMS)
def test_other_forbidden_or_unlisted_addresses_are_refused(target: str) -> None:
    with pytest.raises(ForbiddenTarget):
        netpolicy.check_target(target, [], ALLOW)


def test_a_peer_advertising_a_forbidden_address_does_not_unlock_it() -> None:
    with pytest.raises(ForbiddenTarget, match="link-local"):
        netpolicy.check_target("169.254.169.254", ["169.254.169.254"], ALLOW)
    # a peer outside the allow-list is fine: peers are exempt from the list, never from the rules
    assert netpolicy.check_target("10.1.2.3", ["10.1.2.3"], ALLOW) == "10.1.2.3"


def test_lab_addresses_pass() -> None:
    assert netpolicy.check_target("198.18.0.11", [], ALLOW) == "198.18.0.11"
    assert netpolicy.check_target("198.19.2.11", [], ALLOW) == "198.19.2.11"


def test_a_name_resolving_to_loopback_is_refused() -> None:
    """'localhost' resolves for real through this machine's resolver."""
    with pytest.raises(ForbiddenTarget, match="loopback"):
        netpolicy.check_target("localhost", [], ALLOW)


def test_a_name_resolving_to_the_metadata_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No resolver here maps a name to 169.254.169.254, so getaddrinfo is replaced by one that does
    (the way metadata.google.internal resolves on GCE)."""
    def fake(host: str, *args: Any, **kw: Any) -> list[Any]:
        assert host == "metadata.google.internal"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ForbiddenTarget, match="169.254.169.254"):
        netpolicy.check_target("metadata.google.internal", [], ALLOW)


def test_a_name_with_one_forbidden_address_among_good_ones_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: str, *args: Any, **kw: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("198.18.0.11", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ForbiddenTarget, match="loopback"):
        netpolicy.check_target("rebind.example", [], ALLOW)


@pytest.mark.parametrize("target", ["", "x" * 300, "http://198.18.0.11/", "no-such-name.invalid"])
def test_garbage_targets_are_invalid(target: str) -> None:
    with pytest.raises(ValidationError):
        netpolicy.check_target(target, [], ALLOW)
