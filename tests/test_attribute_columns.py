"""Race and the age bin as columns: the detect export, a scan's faces table, and the migration of older lakes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from enface_batch.lake.schemas import TABLES
from enface_batch.lake.store import Lake
from enface_batch.models.attributes import AGE_BINS, RACES

NEW = ["age_bin", "race", "race_score"]


def enface(*args: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-m", "enface_batch", *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert p.returncode == 0, p.stderr[-3000:]
    text = p.stdout.strip()
    return json.loads(text[text.find("{") :])


@pytest.fixture(scope="module")
def val_crops(tmp_path_factory, test_data) -> tuple[Path, dict[str, dict]]:
    """The first 24 FairFace val crops (reporting split, never trained on) with their labels."""
    root = test_data / "fairface"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"FairFace not found under {root}")
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["image"].startswith("val/")][:24]
    folder = tmp_path_factory.mktemp("fairface_val")
    for r in rows:
        shutil.copy(root / r["image"], folder / Path(r["image"]).name)
    return folder, {Path(r["image"]).name: r for r in rows}


def test_a_schema_2_lake_gains_the_race_and_age_bin_columns(tmp_path):
    """A lake whose faces table predates the columns opens with them (nulls for the stored faces) and accepts
    new faces carrying them."""
    lake = str(tmp_path / "v2")
    Lake(lake)
    v2 = pa.schema([f for f in TABLES["faces"] if f.name not in NEW])
    old = {f.name: None for f in v2} | {"image_sha256": "a" * 64, "face_index": 0, "embedding": [0.0] * 4}
    write_deltalake(f"{lake}/faces", pa.Table.from_pylist([old], v2), mode="overwrite", schema_mode="overwrite")
    assert "race" not in DeltaTable(f"{lake}/faces").schema().to_arrow().names
    upgraded = Lake(lake)  # any writing command opens the lake like this
    assert set(NEW) <= set(DeltaTable(f"{lake}/faces").schema().to_arrow().names)
    after = upgraded.read("faces", columns=["image_sha256", *NEW]).to_pylist()
    assert len(after) == 1 and after[0]["race"] is None and after[0]["age_bin"] is None
    new = {**old, "image_sha256": "b" * 64, "race": "Black", "race_score": 0.9, "age_bin": "20-29"}
    upgraded.append("faces", [new])
    rows = upgraded.read("faces", columns=["image_sha256", *NEW]).to_pylist()
    assert {r["image_sha256"][0]: r["race"] for r in rows} == {"a": None, "b": "Black"}
    version = upgraded.version("faces")
    Lake(lake)  # a second open does nothing more
    assert Lake(lake, create=False).version("faces") == version


def test_detect_out_has_race_and_age_bin_on_fairface_val(val_crops, tmp_path):
    folder, labels = val_crops
    target = tmp_path / "faces.parquet"
    enface("detect", str(folder), "--features", "gender,age,race", "--out", str(target))
    faces = pl.read_parquet(target)
    assert set(NEW) <= set(faces.columns)
    assert faces.height >= 22  # one face per crop; a very blurred crop may give none
    assert faces["race"].null_count() == 0 and set(faces["race"]) <= {*RACES, "unknown"}
    assert faces["age_bin"].is_in(list(AGE_BINS)).all()
    assert ((faces["race_score"] > 0) & (faces["race_score"] <= 1)).all()
    # accuracy sanity on real crops (the figures themselves are bench/accuracy.py's job)
    truth = [labels[Path(r["image"]).name] for r in faces.iter_rows(named=True)]
    gender = sum(g == t["gender"].lower() for g, t in zip(faces["gender"], truth, strict=True)) / len(truth)
    race = sum(r == t["race"] for r, t in zip(faces["race"], truth, strict=True)) / len(truth)
    near = sum(
        abs(AGE_BINS.index(b) - AGE_BINS.index(t["age"])) <= 1 for b, t in zip(faces["age_bin"], truth, strict=True)
    ) / len(truth)
    assert gender >= 0.8 and race >= 0.45 and near >= 0.75, (gender, race, near)

    only_race = tmp_path / "race.parquet"
    enface("detect", str(folder / sorted(labels)[0]), "--features", "race", "--out", str(only_race))
    one = pl.read_parquet(only_race).row(0, named=True)
    assert one["race"] in (*RACES, "unknown") and one["race_score"] > 0
    assert "age_bin" in one and one["gender"] is None  # columns are always there; unasked features are null


def test_a_scan_with_feature_check_race_writes_race_to_faces(val_crops, tmp_path):
    folder, labels = val_crops
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in sorted(labels)[:3]:
        shutil.copy(folder / name, photos / name)
    lake = str(tmp_path / "lake")
    cfg = tmp_path / "archive.yaml"
    cfg.write_text(
        "lists: [{name: people}]\n"
        "groups: [{name: archive, person_list_search: [people]}]\n"
        f"sources: [{{name: photos, group: archive, uri: '{photos}', new_person_threshold: never, "
        "feature_check: [race, age]}]\n"
    )
    enface("apply", str(cfg), "--lake", lake)
    enface("run", "--lake", lake)
    faces = pl.read_delta(f"{lake}/faces")
    assert faces.height == 3
    assert faces["race"].is_in([*RACES, "unknown"]).all() and faces["age_bin"].is_in(list(AGE_BINS)).all()
    assert faces["race_score"].null_count() == 0 and faces["gender"].null_count() == 3
