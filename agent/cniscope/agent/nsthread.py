"""Work inside another network namespace without moving the agent.

``setns(2)`` changes only the calling thread's namespace, so each call runs on a fresh, dedicated
thread that enters the namespace, does its work and ends — the event loop's thread and the
default executor never change namespace. Sockets keep the namespace they were created in, so a
socket made here can be served or used from asyncio in the main thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from cniscope.core.errors import CniscopeError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def enter(netns_path: str) -> None:
    """Move the calling thread into the network namespace at ``netns_path``."""
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniscopeError(f"cannot open network namespace {netns_path}: {exc.strerror}") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise CniscopeError(f"setns({netns_path}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in(netns_path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a throw-away thread inside ``netns_path`` (blocking; "" = here)."""
    if not netns_path:
        return fn()
    box: dict[str, object] = {}

    def body() -> None:
        try:
            enter(netns_path)
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    t = threading.Thread(target=body, name=f"netns:{os.path.basename(netns_path)}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


async def run_in(netns_path: str, fn: Callable[[], T]) -> T:
    """Async form of :func:`call_in`; with no namespace the work still leaves the loop's thread."""
    if not netns_path:
        return await asyncio.to_thread(fn)
    return await asyncio.to_thread(call_in, netns_path, fn)


def make_socket(netns_path: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in ``netns_path`` (blocking call)."""
    return call_in(netns_path, lambda: socket.socket(family, kind))


def listening_socket(netns_path: str, address: str, port: int, kind: int = socket.SOCK_STREAM,
                     backlog: int = 1024) -> socket.socket:
    """A bound (and for TCP listening) non-blocking socket inside ``netns_path``."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            if kind == socket.SOCK_STREAM:
                s.listen(backlog)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    return call_in(netns_path, make)
