"""bcc tracers (tracepoints only). bcc is imported lazily, inside :meth:`BccTracer.start`, so the agent
runs without it; every missing piece (bcc, kernel headers, tracefs event) is ``Unavailable`` with the
reason. Each tracer's BPF C lives beside its module as ``<name>.bpf.c`` and is compiled unchanged;
the namespace filter is a map value, set after loading."""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Any

from cniscope.agent.bpf.btf import Btf
from cniscope.agent.tracers import kernel_headers
from cniscope.api.v1 import common_pb2
from cniscope.core.errors import NotFound, ParseError, Unavailable

HERE = Path(__file__).parent
TRACEFS = Path("/sys/kernel/tracing")


def import_bcc() -> Any:
    """The ``bcc`` module, or Unavailable saying why it cannot be imported."""
    try:
        return importlib.import_module("bcc")
    except ImportError as exc:
        raise Unavailable(f"bcc is not importable ({exc}); install Debian's python3-bpfcc and run "
                          "with /usr/bin/python3 or a venv with system site-packages") from None


def environment_problem(events: list[str], tracefs: Path = TRACEFS, modules: Path = Path("/lib/modules"),
                        sysfs: Path = Path("/sys")) -> str | None:
    """Why bcc tracers cannot run here (no bcc import: that is checked at start), or None. Kernel
    headers come from ``modules`` or the kernel's own kheaders archive (:mod:`.kernel_headers`);
    without either the reason says what to install on the node's distribution."""
    headers = kernel_headers.problem(modules=modules, sysfs=sysfs)
    if headers:
        return headers
    if not (tracefs / "events").is_dir():
        return f"tracefs is not mounted at {tracefs}"
    for ev in events:
        if not (tracefs / "events" / ev).is_dir():
            return f"tracepoint {ev} not in this kernel"
    return None


# struct cns_config field → (struct, member path) in the running kernel (see netns.h)
OFFSETS = {
    "sock_net": ("sock", "__sk_common.skc_net.net"),
    "net_inum": ("net", "ns.inum"),
    "skb_sk": ("sk_buff", "sk"),
    "skb_dev": ("sk_buff", "dev"),
    "dev_net": ("net_device", "nd_net.net"),
}
_offsets_cache: dict[str, int] = {}


def kernel_offsets(btf_path: Path = Path("/sys/kernel/btf/vmlinux")) -> dict[str, int]:
    """The struct member offsets the tracers' namespace filter needs, from the kernel's BTF."""
    if not _offsets_cache:
        btf = Btf.load(btf_path)
        _offsets_cache.update({k: btf.offset(s, m) for k, (s, m) in OFFSETS.items()})
    return dict(_offsets_cache)


def netns_inode(path: str | None) -> int:
    """The inode number of a network namespace file (/run/netns/NAME, /proc/PID/ns/net); 0 = all."""
    if not path:
        return 0
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        raise NotFound(f"no network namespace at {path}") from None


class BccTracer:
    """Load once, read cumulative counters any number of times, stop once."""

    name = ""
    events: list[str] = []
    modules_dir = Path("/lib/modules")   # kernel headers: <modules_dir>/<release>/build, else
    sysfs = Path("/sys")                 # <sysfs>/kernel/kheaders.tar.xz (see kernel_headers)

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.netns_inum = netns_inode(netns)
        self._bpf: Any = None
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def source(self) -> Path:
        return HERE / f"{self.name}.bpf.c"

    def start(self) -> None:
        problem = environment_problem(self.events)
        if problem:
            raise Unavailable(problem)
        kernel_headers.use_for_bcc(kernel_headers.ensure(modules=self.modules_dir, sysfs=self.sysfs))
        bcc = import_bcc()
        try:
            b = bcc.BPF(src_file=os.fsencode(self.source), cflags=[f"-I{HERE}"])
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise Unavailable(f"{self.name}: BPF program did not load: {exc}") from exc
        self._bpf = b
        try:
            self._offsets = kernel_offsets()
        except (OSError, KeyError, ParseError) as exc:
            if self.netns_inum:
                self.stop()
                raise Unavailable(f"cannot filter by network namespace without kernel BTF: {exc}") from exc
            self._offsets = {}
        self._write_config()

    def _write_config(self) -> None:
        cfg = self.table("config")
        cfg[cfg.Key(0)] = cfg.Leaf(netns=self.netns_inum, **self._offsets)

    def set_netns(self, netns: str | None) -> None:
        """Change the namespace filter of a running tracer (None: every namespace)."""
        inum = netns_inode(netns)
        if inum and not self._offsets:
            raise Unavailable("cannot filter by network namespace without kernel BTF")
        self.netns, self.netns_inum = netns, inum
        self._write_config()

    @property
    def running(self) -> bool:
        return self._bpf is not None

    def table(self, name: str) -> Any:
        if self._bpf is None:
            raise RuntimeError(f"tracer {self.name} is not started")
        return self._bpf.get_table(name.encode())

    def array(self, name: str) -> list[int]:
        t = self.table(name)
        return [int(v.value) for v in t.values()]

    def figures(self) -> dict[str, float]:
        raise NotImplementedError

    def samples(self, now_ns: int) -> list[common_pb2.Sample]:
        raise NotImplementedError

    def stop(self) -> None:
        with self._lock:
            if self._bpf is not None:
                b, self._bpf = self._bpf, None
                b.cleanup()

    def __enter__(self) -> BccTracer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
