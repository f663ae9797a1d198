"""The C allocator's settings for the collector process (glibc's; other C libraries are left alone).

By default glibc gives each thread that allocates its own arena (up to 8 per core), keeps what a
thread frees in that arena for reuse, and raises its mmap threshold to the largest block freed so far
(up to 32 MiB). A collector fed large batches then serves every later multi-megabyte buffer — a
batch's encoding, gRPC's message buffers — from those arenas, where the freed space stays resident
and fragmented across the store's, gRPC's and the event loop's threads. Two arenas and a fixed
256 KiB threshold (large buffers mapped and unmapped whole) keep the peak near what is in use: 120
batches of 3.2 MiB on one stream peaked at +72 MiB over idle without them and +51 MiB with them
(BENCHMARKS.md, hostile loads). A setting already given in the environment (``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_THRESHOLD_``) is kept.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("cniscope.collector")

M_MMAP_THRESHOLD = -3   # mallopt parameters, from glibc's malloc.h
M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 256 * 1024

SETTINGS = ((M_ARENA_MAX, ARENAS, "MALLOC_ARENA_MAX"), (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"))


def limit_heap() -> list[str]:
    """Apply the settings (before the process starts its threads); the environment variables of
    those applied here."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:   # not glibc
        return []
    applied = []
    for param, value, env in SETTINGS:
        if env in os.environ:
            continue
        if mallopt(param, value) == 1:
            applied.append(env)
        else:
            log.debug("mallopt(%d, %d) refused", param, value)
    return applied
