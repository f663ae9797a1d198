"""The cniscope version, read from the installed distribution."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("cniscope")
except metadata.PackageNotFoundError:  # running from a source tree without install
    VERSION = "0.0.0+src"
