"""Logging set-up shared by every command: one line per event, to stderr."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        lvl = logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(lvl)
    # grpc's own chatter stays quiet unless asked for
    logging.getLogger("asyncio").setLevel(max(lvl, logging.WARNING))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
