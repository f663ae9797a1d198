"""Generate the Python stubs for ``cniscope/api/v1/*.proto`` (``make proto``).

The stubs are committed; ``tests/unit/test_proto_current.py`` regenerates them into a temporary
directory and compares bytes, so an edited ``.proto`` without regenerated stubs fails the suite.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2]  # .../proto
API_DIR = PROTO_ROOT / "cniscope" / "api" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(API_DIR.glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run protoc (grpcio-tools) with the mypy-protobuf plugins; return the generated files."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev dependency, imported only here

    bindir = Path(sys.executable).parent
    mypy_plugin = shutil.which("protoc-gen-mypy", path=str(bindir)) or shutil.which("protoc-gen-mypy")
    mypy_grpc = shutil.which("protoc-gen-mypy_grpc", path=str(bindir)) or shutil.which("protoc-gen-mypy_grpc")
    if not mypy_plugin or not mypy_grpc:
        raise SystemExit("mypy-protobuf is not installed (pip install -e '.[dev]')")
    include = Path(protoc.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={mypy_plugin}",
        f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out=quiet:{out_root}",
        f"--mypy_grpc_out=quiet:{out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    gen_dir = out_root / "cniscope" / "api" / "v1"
    return sorted(p for p in gen_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", choices=["proto"], help="what to generate")
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: in place)")
    ns = parser.parse_args(argv)
    files = generate(ns.out)
    for f in files:
        print(f"generated {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
