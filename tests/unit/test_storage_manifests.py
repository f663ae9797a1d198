"""The collector's database bound agrees with the volume it lives on, in the base install and every
overlay: under an emptyDir the bound (CNISCOPE_MAX_DB_BYTES, else the default) stays well below the
sizeLimit, and the container requests that much ephemeral storage; on a claim, below the claim."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from cniscope.collector.size_guard import WAL_MAX
from cniscope.core.config import CollectorConfig, settings

sys.path.insert(0, str(Path(__file__).parents[1]))
import kustomize  # type: ignore[import-not-found]  # noqa: E402

ROOT = Path(__file__).parents[2] / "daemonset"
INSTALLS = [ROOT / "base", *sorted(p for p in (ROOT / "overlays").iterdir() if (p / "kustomization.yaml").exists())]
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
MARGIN = 0.8   # the bound (file and WAL) at most this share of its volume: room for the shared memory, temp files


def _qty(q: str) -> int:
    for suffix, mult in UNITS.items():
        if q.endswith(suffix):
            return int(float(q[:-len(suffix)]) * mult)
    return int(q)


def _default_bound() -> int:
    return int(next(s for s in settings(CollectorConfig) if s.name == "max_db_bytes").default)


def _collector(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "cniscope-collector")
    pod = dep["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "collector"), docs


@pytest.mark.parametrize("install", INSTALLS, ids=lambda p: p.name)
def test_the_database_bound_agrees_with_its_volume(install: Path) -> None:
    pod, container, docs = _collector(kustomize.render(install))
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    bound = int(env.get("CNISCOPE_MAX_DB_BYTES") or _default_bound())
    db_dir = str(Path(env.get("CNISCOPE_DB", "/var/lib/cniscope/cniscope.db")).parent)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == db_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    if "emptyDir" in volume:
        limit = _qty(volume["emptyDir"]["sizeLimit"])
        assert bound <= MARGIN * limit, f"{install.name}: bound {bound} too close to the emptyDir's {limit}"
        request = _qty(container["resources"]["requests"]["ephemeral-storage"])
        assert request == limit, f"{install.name}: ephemeral-storage request {request} != sizeLimit {limit}"
    else:
        claim_name = volume["persistentVolumeClaim"]["claimName"]
        claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim_name)
        size = _qty(claim["spec"]["resources"]["requests"]["storage"])
        assert bound <= MARGIN * size, f"{install.name}: bound {bound} too close to the claim's {size}"
        assert bound > 2 * _default_bound(), f"{install.name}: a claim of {size} bytes left at the emptyDir's bound"
        request = _qty(container["resources"]["requests"].get("ephemeral-storage", "0"))
        assert request < 2**30, f"{install.name}: still requests {request} bytes of ephemeral storage"
    assert bound > 4 * WAL_MAX  # the WAL's reserve leaves most of the bound to the data
