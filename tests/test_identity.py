"""Who is in which photo: every face knows its person (person_faces), built the way users build a lake
(enrol, scan, dedup through the CLI), read the way analysts read it (polars), and kept true by every operation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from enface_batch.lake.reader import LakeReader
from enface_batch.lake.schemas import TABLES
from enface_batch.lake.store import Lake
from enface_batch.ops import browse
from enface_batch.ops.quality import _GRID, outside_fraction, outside_fractions

EX = "fixtures/face_recognition_examples/examples"
OBAMA = ["obama.jpg", "obama2.jpg", "obama-480p.jpg", "obama-720p.jpg", "two_people.jpg"]
OTHERS = ["biden.jpg", "alex-lacamoire.png", "lin-manuel-miranda.png"]


def enface(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "enface_batch", *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout.strip()
    return json.loads(text[text.find("{") :])


# The analyst's queries, as the README gives them.
def photos_of_person(lake: str, person_id: str) -> set[str]:
    return set(
        pl.scan_delta(f"{lake}/person_faces")
        .filter(pl.col("person_id") == person_id)
        .join(pl.scan_delta(f"{lake}/files"), left_on="image_sha256", right_on="sha256")
        .select("uri")
        .collect()["uri"]
        .to_list()
    )


def persons_with_photo_counts(lake: str, list_id: str) -> pl.DataFrame:
    return (
        pl.scan_delta(f"{lake}/person_faces")
        .filter(pl.col("list_id") == list_id)
        .group_by("person_id")
        .agg(pl.col("image_sha256").n_unique().alias("photos"))
        .join(pl.scan_delta(f"{lake}/persons").select("person_id", "fields"), on="person_id")
        .sort("photos", descending=True)
        .collect()
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, test_data):
    """Obama enrolled twice by mistake (two folders), then a folder scanned (auto-enrolment at 90 into the same
    list), then dedup: through the CLI, as a user does."""
    ex = test_data / EX
    root = tmp_path_factory.mktemp("identity")
    people = root / "people"
    for folder, name in (("Barack", "obama.jpg"), ("B. Obama", "obama2.jpg"), ("Joe Biden", "biden.jpg")):
        (people / folder).mkdir(parents=True)
        shutil.copy(ex / name, people / folder / name)
    photos = root / "photos"
    photos.mkdir()
    for name in OBAMA + OTHERS:
        shutil.copy(ex / name, photos / name)
    (photos / "empty.jpg").write_bytes(b"")
    lake = str(root / "lake")
    cfg = root / "archive.yaml"
    cfg.write_text(
        "lists: [{name: people}]\n"
        "groups: [{name: archive, person_list_search: [people]}]\n"
        f"sources: [{{name: photos, group: archive, uri: '{photos}', new_person_threshold: '90', "
        "new_person_square_min: 50, new_person_angle_max: 80, person_list_add: [people]}]\n"
    )
    ids = enface("apply", str(cfg), "--lake", lake)["ids"]
    list_id = ids["lists"]["people"]
    enrolled = enface("enrol", str(people), "--list-id", list_id, "--lake", lake)
    assert enrolled["persons_created"] == 3
    pf = pl.read_delta(f"{lake}/person_faces")
    both = pf.filter(pl.col("image_uri").str.contains("obama"))["person_id"].to_list()
    assert len(set(both)) == 2  # Obama is two persons now
    summary = enface("run", "--lake", lake)
    before_dedup = pl.read_delta(f"{lake}/person_faces")
    merged = enface("dedup", "--list-id", list_id, "--threshold", "90", "--lake", lake)
    return {
        "lake": lake,
        "list": list_id,
        "photos": photos,
        "obama_persons": set(both),
        "summary": summary,
        "before_dedup": before_dedup,
        "dedup": merged,
    }


def test_every_face_of_a_scanned_photo_has_its_person(built):
    lake, list_id = built["lake"], built["list"]
    faces = pl.read_delta(f"{lake}/faces")
    pf = pl.read_delta(f"{lake}/person_faces").filter(pl.col("list_id") == list_id)
    # every face large and frontal enough has a person in the list, and one only
    assert pf.group_by("face_id").len()["len"].max() == 1
    keyed = set(zip(pf["image_sha256"], pf["face_index"], strict=True))
    big = faces.filter(pl.col("square") >= 50)
    assert all((s, i) in keyed for s, i in zip(big["image_sha256"], big["face_index"], strict=True))
    hows = set(pf["how"])
    assert {"enrolled", "matched"} <= hows
    matched = pf.filter(pl.col("how") == "matched")
    assert matched["score"].min() >= 90 and matched["source_id"].null_count() == 0
    assert matched["action_id"].null_count() == 0  # each points at its actions row
    acts = set(pl.read_delta(f"{lake}/actions")["action_id"])
    assert set(matched["action_id"]) <= acts
    created = pl.read_delta(f"{lake}/persons").filter(pl.col("source_id").is_not_null())
    assert set(created["action_id"]) <= acts  # persons.action_id names the action, not the run


def test_dedup_merges_the_two_obamas_and_the_analyst_query_finds_all_his_photos(built):
    lake, list_id = built["lake"], built["list"]
    merges = built["dedup"]["merged"]
    assert any({m["kept"], *m["merged"]} >= built["obama_persons"] for m in merges), merges
    pf = pl.read_delta(f"{lake}/person_faces").filter(pl.col("list_id") == list_id)
    obama = pf.filter(pl.col("image_uri").str.ends_with("/obama.jpg"))["person_id"][0]
    photos = {Path(u).name for u in photos_of_person(lake, obama)}
    assert photos == set(OBAMA), photos  # exactly his photos: the scanned ones, both enrolled ones
    counts = persons_with_photo_counts(lake, list_id)
    assert counts["person_id"][0] == obama and counts["photos"][0] == len(OBAMA)
    # and the CLI says the same
    out = enface("person", "photos", "--person-id", obama, "--list-id", list_id, "--lake", lake)
    assert {Path(p).name for ph in out["photos"] for p in ph["paths"]} == set(OBAMA)


def test_person_page_answers_for_every_person_of_a_scanned_and_deduplicated_lake(built):
    lake = Lake(built["lake"])
    snap = LakeReader(lake).snapshot()
    listed = browse.list_persons(snap, built["list"], limit=500)
    assert listed["total"] >= 4
    for p in listed["persons"]:
        page = browse.person_detail(snap, p["person_id"], built["list"])
        assert page["faces"] and p["faces"] == len(page["faces"])
        assert all(f["kind"] in ("created", "matched", "enrolled", "merged", "replaced") for f in page["faces"])
    assert browse.list_persons(snap, built["list"], offset=60)["persons"] == []


def test_delete_and_replace_keep_faces_true(built, tmp_path, test_data):
    lake = str(tmp_path / "copy")
    shutil.copytree(built["lake"], lake)
    list_id = built["list"]
    biden = pl.read_delta(f"{lake}/person_faces").filter(pl.col("image_uri").str.ends_with("/biden.jpg"))
    pid = biden["person_id"][0]
    enface(
        "person",
        "create",
        str(test_data / EX / "biden.jpg"),
        "--list-id",
        list_id,
        "--replace-person-id",
        pid,
        "--lake",
        lake,
    )
    rows = pl.read_delta(f"{lake}/person_faces").filter(pl.col("person_id") == pid)
    assert "replaced" in set(rows["how"]) and rows.group_by("face_id").len()["len"].max() == 1
    enface("person", "delete", "--person-id", pid, "--list-id", list_id, "--lake", lake)
    assert pl.read_delta(f"{lake}/person_faces").filter(pl.col("person_id") == pid).height == 0


def test_empty_files_are_recorded_once(built):
    again = enface("run", "--lake", built["lake"])
    text = json.dumps(again)
    assert '"images_new": 0' in text and '"images_failed": 0' in text, text


def test_quality_outside_fraction():
    inside = [[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]]
    assert outside_fraction(inside, 112, 112) == pytest.approx(0.0, abs=0.02)
    shifted = [[x - 56, y] for x, y in inside]  # the face's left half is beyond the left border
    assert 0.4 < outside_fraction(shifted, 112, 112) < 0.6


def test_quality_of_a_chunk_at_once_equals_face_by_face_through_the_aligner():
    """The writer checks a chunk's faces in one call: the same fractions as inverting the aligner's own
    (SVD) similarity transform face by face, on faces of every size, angle and place, borders included."""
    import numpy as np

    from enface_batch.models.align import ARCFACE_112, similarity_transform

    def by_aligner(marks, width, height):
        m = similarity_transform(np.asarray(marks, np.float64), ARCFACE_112)
        pts = (_GRID - m[:, 2]) @ np.linalg.inv(m[:, :2]).T
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= width) & (pts[:, 1] >= 0) & (pts[:, 1] <= height)
        return float(1.0 - inside.mean())

    rng = np.random.default_rng(0)
    marks, sizes = [], []
    for _ in range(500):
        scale, angle = rng.uniform(5, 200), rng.normal(0, 0.5)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = (ARCFACE_112 - 56) / 112 * scale @ rot.T + rng.uniform(-50, 700, 2)
        marks.append(pts + rng.normal(0, scale * 0.03, (5, 2)))
        sizes.append(rng.integers(100, 800, 2))
    got = outside_fractions(np.array(marks), np.array(sizes))
    want = [by_aligner(m, w, h) for m, (w, h) in zip(marks, sizes, strict=True)]
    assert 0.2 < np.mean(np.array(want) > 0) < 1  # faces inside and faces cut by a border
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_a_schema_1_lake_upgrades_in_place(built, tmp_path):
    """A lake as release 1 wrote it (person_faces without its new columns, nothing for matched faces) opens
    with every face's person back-filled from persons, actions and merges."""
    lake = str(tmp_path / "v1")
    shutil.copytree(built["lake"], lake)
    v1 = pa.schema(
        [f for f in TABLES["person_faces"] if f.name not in ("score", "how", "source_id", "run_id", "action_id")]
    )
    now_rows = pl.read_delta(f"{lake}/person_faces")
    write_deltalake(f"{lake}/person_faces", v1.empty_table(), mode="overwrite", schema_mode="overwrite")
    assert "how" not in pl.read_delta(f"{lake}/person_faces").columns
    Lake(lake)  # any writing command opens the lake like this
    after = pl.read_delta(f"{lake}/person_faces")
    assert "how" in after.columns
    # every creating face and every face the scans matched at their threshold are back
    want = set(now_rows.filter(pl.col("how").is_in(["created", "matched"]))["face_id"])
    assert want <= set(after["face_id"])
    Lake(lake)  # a second open does nothing more
    assert pl.read_delta(f"{lake}/person_faces").height == after.height
