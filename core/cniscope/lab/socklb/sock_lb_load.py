"""Compile and load ``sock_lb.bpf.c`` with bcc, pin its maps and programs under a bpffs directory
and attach each program to a cgroup through a pinned BPF link.

It runs as a child process (``python -m cniscope.lab.socklb.sock_lb_load BPFFS CGROUP``): the
compiler's memory goes with it, and what it leaves — pins and links — is exactly what keeps the
datapath alive, as a restarted Cilium agent finds its maps and programs in bpffs. Pins:

    BPFFS/tc/globals/<map>          the maps, under their full Cilium names (where Cilium pins them)
    BPFFS/cniscope/<program>        the programs
    BPFFS/cniscope/<program>_link   the cgroup links; unpinning one detaches its program

On any failure what was pinned so far is removed again and the exit status is non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from cniscope.lab.socklb import cilium_lb as lb

HERE = Path(__file__).parent
SOURCE = HERE / "sock_lb.bpf.c"


def map_pin(bpffs: Path, name: str) -> Path:
    return bpffs / "tc" / "globals" / name


def prog_pin(bpffs: Path, prog: str) -> Path:
    return bpffs / "cniscope" / prog


def link_pin(bpffs: Path, prog: str) -> Path:
    return bpffs / "cniscope" / f"{prog}_link"


def all_pins(bpffs: Path) -> list[Path]:
    """Links first: unpinning them detaches the programs before anything else goes."""
    return ([link_pin(bpffs, p) for p, _ in lb.PROGRAMS] + [prog_pin(bpffs, p) for p, _ in lb.PROGRAMS]
            + [map_pin(bpffs, m) for m in lb.MAPS])


def load(bpffs: Path, cgroup: Path) -> dict[str, Any]:
    """Load, pin and attach; returns the ids of what it made. Blocking (a second of compiling)."""
    from bcc import BPF  # imported here: only the loader process needs bcc

    from cniscope.agent.bpf import syscall as sc
    from cniscope.agent.tracers import kernel_headers

    kernel_headers.use_for_bcc(kernel_headers.ensure())
    for d in (bpffs / "tc" / "globals", bpffs / "cniscope"):
        d.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    out: dict[str, Any] = {"maps": {}, "programs": {}, "links": {}}
    b = BPF(src_file=os.fsencode(SOURCE))
    try:
        for name in lb.MAPS:
            fd = b.get_table(name).get_fd()
            sc.obj_pin(fd, str(map_pin(bpffs, name)))
            made.append(map_pin(bpffs, name))
            out["maps"][name] = int(sc.fdinfo(fd)["map_id"])
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for prog, attach in lb.PROGRAMS:
                fn = b.load_func(prog.encode(), BPF.CGROUP_SOCK_ADDR, attach_type=attach)
                sc.obj_pin(fn.fd, str(prog_pin(bpffs, prog)))
                made.append(prog_pin(bpffs, prog))
                out["programs"][prog] = int(sc.fdinfo(fn.fd)["prog_id"])
                with sc.link_create(fn.fd, cg, attach) as link:
                    sc.obj_pin(link.fd, str(link_pin(bpffs, prog)))
                    made.append(link_pin(bpffs, prog))
                    out["links"][prog] = int(sc.fdinfo(link.fd)["link_id"])
        finally:
            os.close(cg)
    except BaseException:
        for p in reversed(made):
            p.unlink(missing_ok=True)
        raise
    finally:
        b.cleanup()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m cniscope.lab.socklb.sock_lb_load BPFFS_DIR CGROUP_DIR", file=sys.stderr)
        return 2
    try:
        made = load(Path(argv[0]), Path(argv[1]))
    except Exception as exc:  # the parent reads the reason from stderr
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
