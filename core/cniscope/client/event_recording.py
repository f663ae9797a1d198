"""The recording format of ``cniscope tui --record`` / ``--replay``: JSON lines, each
``{"t": seconds since the start, "event": ClusterEvent as JSON}`` or ``{"t": …, "runs": [...]}`` (the
stored runs as a client lists them); a ``.gz`` file is read too."""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from google.protobuf import json_format

from cniscope.api.v1 import cluster_pb2
from cniscope.client.run_summary import RunSummary, run_from_dict, run_to_dict
from cniscope.core.errors import CniscopeError


class Recorder:
    """Appends what a live client receives to a recording, flushed line by line."""

    def __init__(self, path: str) -> None:
        self._out: IO[str] = open(path, "w")  # noqa: SIM115  (closed by close())
        self._t0 = time.monotonic()

    def _line(self, body: dict[str, object]) -> None:
        self._out.write(json.dumps({"t": round(time.monotonic() - self._t0, 3), **body}) + "\n")
        self._out.flush()

    def event(self, ev: cluster_pb2.ClusterEvent) -> None:
        self._line({"event": json_format.MessageToDict(ev, preserving_proto_field_name=True)})

    def runs(self, runs: list[RunSummary]) -> None:
        self._line({"runs": [run_to_dict(r) for r in runs]})

    def close(self) -> None:
        self._out.close()


@dataclass
class Recording:
    events: list[tuple[float, cluster_pb2.ClusterEvent]] = field(default_factory=list)
    runs: list[RunSummary] | None = None   # None: the recording holds no runs


def read_recording(path: Path) -> Recording:
    try:
        if path.suffix == ".gz":
            lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        else:
            lines = path.read_text().splitlines()
    except OSError as exc:
        raise CniscopeError(f"cannot read recording {path}: {exc.strerror}") from None
    out = Recording()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if "runs" in obj:
                out.runs = [run_from_dict(r) for r in obj["runs"]]
                continue
            ev = json_format.ParseDict(obj["event"], cluster_pb2.ClusterEvent())
        except (ValueError, KeyError, TypeError, json_format.ParseError) as exc:
            raise CniscopeError(f"{path}:{n}: not a recorded event ({exc})") from None
        out.events.append((float(obj.get("t", 0.0)), ev))
    return out
