"""Dedup without real weights: the clustering rules on hand-made vectors, and a whole run over persons the fake
model pack (tests/fakepack.py) made from generated photos."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from fakepack import identity_photo, write_pack

from enface_batch.analyze import Analyzer
from enface_batch.lake.store import Lake
from enface_batch.models import load_pack
from enface_batch.ops import catalog
from enface_batch.ops.action import person_row
from enface_batch.ops.dedup import cluster_persons, dedup


def _unit(deg: float) -> list[float]:
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0]


def _clusters(emb, sha=None, idx=None, **kw):
    n = len(emb)
    sha = sha or [f"img{i}" for i in range(n)]
    idx = idx or [0] * n
    return cluster_persons(np.float32(emb), np.arange(n), sha, idx, n, **kw)


def test_similar_persons_cluster_into_the_oldest_and_strangers_stay_apart():
    got = _clusters([_unit(0), _unit(90), _unit(5), _unit(180)], min_similarity=0.9)
    assert [m for m, _ in got] == [[0, 2]]
    assert got[0][1] == pytest.approx(np.cos(np.radians(5)), abs=1e-5)  # the linking cosine
    assert _clusters([_unit(0), _unit(90)], min_similarity=0.9) == []


def test_average_linkage_does_not_chain_through_a_middle_person():
    # a~b 0.94, b~c 0.77, a~c 0.50: with 0.7, a and b merge, and the pair (a+b, c) averages 0.63 < 0.7
    emb = [_unit(0), _unit(20), _unit(60)]
    assert [m for m, _ in _clusters(emb, min_similarity=0.7)] == [[0, 1]]
    assert [m for m, _ in _clusters(emb, min_similarity=0.7, linkage="single")] == [[0, 1, 2]]  # it would
    with pytest.raises(ValueError, match="linkage"):
        _clusters(emb, min_similarity=0.7, linkage="ward")


def test_two_faces_of_one_photo_are_never_merged_but_one_face_twice_is():
    emb = [_unit(0), _unit(1)]
    assert _clusters(emb, sha=["same", "same"], idx=[0, 1], min_similarity=0.9) == []  # cannot-link
    assert [m for m, _ in _clusters(emb, sha=["same", "same"], idx=[0, 0], min_similarity=0.9)] == [[0, 1]]


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    return Analyzer(load_pack(str(write_pack(tmp_path_factory.mktemp("fakepack"), identities=True)), threads=1))


def test_dedup_merges_one_persons_duplicates_records_it_and_a_rerun_finds_nothing(tmp_path, analyzer):
    photos = [
        identity_photo(tmp_path / f"{who}{k}.png", ident, k)
        for who, ident, k in (("ann", 1, 0), ("bob", 2, 0), ("ann", 1, 1), ("ann", 1, 2), ("cy", 3, 0))
    ]
    results = list(analyzer.analyze_uris([str(p) for p in photos], multi=True))
    assert [len(r.faces) for r in results] == [1] * 5
    lake = Lake(tmp_path / "lake")
    lid = catalog.create_list(lake, "people")["list_id"]
    rows = []
    for i, r in enumerate(results):  # one person per photo, oldest first
        row = person_row(
            r.faces[0], r, list_id=lid, source_id=None, group_id=None, drop_image=True, model=analyzer.pack.version
        )
        row["created"] += timedelta(seconds=i)
        row["fields"] = [f"photo{i}"]
        rows.append(row)
    lake.append("persons", rows)
    ids = [r["person_id"] for r in rows]

    dry = dedup(lake, lid, threshold="90", dry_run=True)
    assert [(m["kept"], sorted(m["merged"])) for m in dry["merged"]] == [(ids[0], sorted([ids[2], ids[3]]))]
    assert dry["merged"][0]["score"] >= 90 and dry["persons_after"] == 3
    assert lake.read("persons", where={"list_id": lid}).num_rows == 5 and lake.read("merges").num_rows == 0

    out = dedup(lake, lid, threshold="90")
    assert (out["persons_before"], out["persons_after"]) == (5, 3)
    persons = {p["person_id"]: p for p in lake.read("persons", where={"list_id": lid}).to_pylist()}
    assert set(persons) == {ids[0], ids[1], ids[4]}
    assert persons[ids[0]]["fields"] == ["photo0", "photo2", "photo3"]  # fields unioned into the oldest
    (merge,) = lake.read("merges", where={"list_id": lid}).to_pylist()
    assert merge["kept_person_id"] == ids[0] and merge["merged_person_ids"] == sorted([ids[2], ids[3]])
    moved = lake.read("person_faces", where={"list_id": lid}).to_pylist()
    assert {f["person_id"] for f in moved} == {ids[0]} and len(moved) >= 2

    assert dedup(lake, lid, threshold="90")["merged"] == []
