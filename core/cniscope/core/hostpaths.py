"""Where the host's /proc, /sys and /run are. In a DaemonSet they are mounted under /host."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cniscope.core.config import AgentConfig, env_value


@dataclass(frozen=True)
class HostPaths:
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    run: Path = Path("/run")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> HostPaths:
        e = os.environ if env is None else env
        return cls(
            proc=Path(env_value(AgentConfig, "host_proc", e)),
            sys=Path(env_value(AgentConfig, "host_sys", e)),
            run=Path(env_value(AgentConfig, "host_run", e)),
        )

    def proc_path(self, *parts: str | int) -> Path:
        return self.proc.joinpath(*(str(p) for p in parts))

    def sys_path(self, *parts: str) -> Path:
        return self.sys.joinpath(*parts)

    def run_path(self, *parts: str) -> Path:
        return self.run.joinpath(*parts)
