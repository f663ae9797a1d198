"""The committed stubs are exactly what `make proto` generates from the committed .proto files."""

from __future__ import annotations

from pathlib import Path

from cniscope.api import codegen


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    files = codegen.generate(tmp_path)
    assert files, "no stubs generated"
    committed = codegen.API_DIR
    stale = []
    for f in files:
        mine = committed / f.name
        if not mine.exists() or mine.read_bytes() != f.read_bytes():
            stale.append(f.name)
    extra = sorted(p.name for p in committed.iterdir()
                   if p.name.endswith(codegen.GENERATED_SUFFIXES) and p.name not in {f.name for f in files})
    assert not stale, f"stubs out of date, run `make proto`: {stale}"
    assert not extra, f"stubs without a .proto: {extra}"
