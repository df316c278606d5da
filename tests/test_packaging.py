"""What the wheel installs: one top-level name, `enface_batch`, with the repository's flows/ as enface_batch.flows."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_distribution_has_no_top_level_flows():
    dist = importlib.metadata.distribution("enface-batch")
    top = (dist.read_text("top_level.txt") or "").split()
    assert top == ["enface_batch"], (
        f"{dist._path} installs {top}: a top-level `flows` collides with other projects' "
        "(an install older than the enface_batch.flows mapping? re-install: pip install -e .)"
    )
    if dist.read_text("RECORD") is not None:  # an installed wheel (a checkout's egg-info lists sources instead)
        assert not [f for f in dist.files or [] if f.parts[0] == "flows"]


def test_flows_load_from_the_same_tree_as_the_package():
    import enface_batch.flows.scan

    pkg = Path(enface_batch.__file__).resolve().parent
    flows = Path(enface_batch.flows.scan.__file__).resolve().parent
    # installed: site-packages/enface_batch/flows; editable or source: <checkout>/flows beside <checkout>/enface_batch
    assert flows in (pkg / "flows", pkg.parent / "flows"), (
        f"enface_batch from {pkg} but its flows from {flows}: the editable install maps another checkout; "
        f"run `pip install -e {pkg.parent}` in this environment"
    )


def test_every_package_folder_is_listed_for_the_wheel():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"enface_batch.flows": "flows"}
    on_disk = {"enface_batch.flows"} | {
        ".".join(d.relative_to(ROOT).parts)
        for d in [ROOT / "enface_batch", *(ROOT / "enface_batch").rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(f.is_file() for f in d.iterdir())
    }
    assert set(tool["packages"]) == on_disk
    assert not [p for p in tool["packages"] if not p.startswith("enface_batch")]
