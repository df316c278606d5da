"""`dedup`: persons of one list that are the same person are merged into the oldest, on real photos, with the
lake in a folder and on a real S3 endpoint."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from enface_batch.lake.schemas import TABLES
from enface_batch.ops import catalog
from enface_batch.ops.action import person_row
from enface_batch.ops.dedup import cluster_persons, conflicts, dedup
from enface_batch.ops.errors import BadRequest, NotFound
from enface_batch.ops.identity import own_face
from enface_batch.ops.search import Searcher

EX = "fixtures/face_recognition_examples/examples"
ATT = "fixtures/att_faces/images"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def faces(analyzer, test_data) -> dict[str, tuple]:
    """name -> (face, image result) of the example photos, analysed once; two_people gives two: its Obama
    and its Biden (found by similarity, not assumed), plus 10 att_faces people x 3 photos."""
    ex = test_data / EX
    names = ["obama.jpg", "obama2.jpg", "obama-480p.jpg", "obama-720p.jpg", "biden.jpg"]
    names += ["alex-lacamoire.png", "lin-manuel-miranda.png", "two_people.jpg"]
    out = {}
    for res in analyzer.analyze_uris([str(ex / n) for n in names], multi=True):
        name = Path(res.uri).stem
        if name == "two_people":
            assert len(res.faces) == 2
            for f in res.faces:
                obama = float(f.embedding @ out["obama"][0].embedding) > float(f.embedding @ out["biden"][0].embedding)
                out["two_people_obama" if obama else "two_people_biden"] = (f, res)
        else:
            out[name] = (res.faces[0], res)
    assert {"two_people_obama", "two_people_biden"} <= set(out)
    att = [str(test_data / ATT / f"s{i}" / f"{j}.pgm") for i in range(1, 11) for j in (1, 5, 9)]
    for res in analyzer.analyze_uris(att, multi=False):
        out["att/" + "/".join(Path(res.uri).parts[-2:])] = (res.faces[0], res)
    return out


def enrol(lake, list_id: str, faces: dict, names: list[str], *, fields: dict | None = None, start: int = 0) -> dict:
    """One person per named face, created one minute apart in the given order (duplicates let through)."""
    rows = []
    for i, name in enumerate(names):
        face, res = faces[name]
        row = person_row(
            face,
            res,
            list_id=list_id,
            source_id=None,
            group_id=None,
            drop_image=False,
            model="test",
            fields=(fields or {}).get(name, []),
        )
        row["created"] = row["updated"] = T0 + timedelta(minutes=start + i)
        rows.append(row)
    lake.append("persons", rows)
    lake.append("person_faces", [created_face(r) for r in rows])
    return {name: r["person_id"] for name, r in zip(names, rows, strict=True)}


def created_face(row: dict) -> dict:
    """The face row every operation that creates a person writes beside it."""
    return own_face(row, "created")


def versions(lake) -> dict:
    return {t: lake.version(t) for t in TABLES}


def persons_of(lake, list_id: str) -> dict[str, dict]:
    return {r["person_id"]: r for r in lake.read("persons", where={"list_id": list_id}).to_pylist()}


def groups(out: dict) -> dict[str, set[str]]:
    return {m["kept"]: set(m["merged"]) for m in out["merged"]}


def test_duplicates_merge_into_the_oldest_and_strangers_never(lake, faces, analyzer):
    lst = catalog.create_list(lake, "family")["list_id"]
    order = [
        "obama2",
        "biden",
        "obama",
        "alex-lacamoire",
        "two_people_obama",
        "two_people_biden",
        "obama-480p",
        "lin-manuel-miranda",
    ]
    fields = {"obama2": ["Obama"], "obama": ["Barack Obama", "Obama"], "obama-480p": ["Barack Obama", "POTUS"]}
    fields["biden"] = ["Joe"]
    pid = enrol(lake, lst, faces, order, fields=fields)
    searcher = Searcher(lake, analyzer.pack.embedder.dim)
    q = np.stack([faces["obama"][0].embedding, faces["two_people_biden"][0].embedding])
    assert [h[0][0] for h in searcher.search([lst], q, 1)] == [pid["obama"], pid["two_people_biden"]]

    before = versions(lake)
    dry = dedup(lake, lst, dry_run=True)
    assert versions(lake) == before  # dry_run writes nothing
    expected = {
        pid["obama2"]: {pid["obama"], pid["two_people_obama"], pid["obama-480p"]},
        pid["biden"]: {pid["two_people_biden"]},
    }
    assert groups(dry) == expected
    assert dry["persons_before"] == 8 and dry["persons_after"] == 4 and dry["status"] == "ok"

    out = dedup(lake, lst, run_id="run-1")
    assert groups(out) == expected and out["persons_after"] == 4
    one_each = {pid["alex-lacamoire"]: 1, pid["lin-manuel-miranda"]: 1}
    assert all(m["score"] >= 90 for m in out["merged"])
    left = persons_of(lake, lst)
    assert set(left) == {pid[n] for n in ("obama2", "biden", "alex-lacamoire", "lin-manuel-miranda")}
    # the survivor keeps its id, creation time and fields first, then the others' in order, no duplicates
    assert left[pid["obama2"]]["fields"] == ["Obama", "Barack Obama", "POTUS"]
    assert left[pid["obama2"]]["created"] == T0 and left[pid["obama2"]]["updated"] > T0
    assert left[pid["biden"]]["fields"] == ["Joe"]
    # every merged face is now a face of its survivor
    every = lake.read("person_faces", where={"list_id": lst}).to_pylist()
    assert Counter(r["person_id"] for r in every) == {pid["obama2"]: 4, pid["biden"]: 2, **one_each}
    pf = [r for r in every if r["how"] == "merged"]
    assert Counter(r["person_id"] for r in pf) == {pid["obama2"]: 3, pid["biden"]: 1}
    assert {r["from_person_id"] for r in pf} == {
        pid["obama"],
        pid["two_people_obama"],
        pid["obama-480p"],
        pid["two_people_biden"],
    }
    for r in pf:
        name = next(n for n, p in pid.items() if p == r["from_person_id"])
        face, res = faces[name]
        assert r["image_sha256"] == res.sha256 and r["face_index"] == face.index and r["thumb"]
        assert np.allclose(r["embedding"], face.embedding)
    # the two faces of two_people.jpg are with different persons
    owner = {r["from_person_id"]: r["person_id"] for r in pf}
    assert owner[pid["two_people_obama"]] != owner[pid["two_people_biden"]]
    # one merges row per cluster, for review
    merges = {r["kept_person_id"]: r for r in lake.read("merges", where={"list_id": lst}).to_pylist()}
    assert {k: set(r["merged_person_ids"]) for k, r in merges.items()} == expected
    assert all(r["run_id"] == "run-1" and r["score"] >= 90 for r in merges.values())

    # search follows: once refreshed, the same Searcher sees the new table version and finds the survivors
    searcher.refresh()
    assert [h[0][0] for h in searcher.search([lst], q, 1)] == [pid["obama2"], pid["biden"]]

    # a second run finds nothing: no commit at all
    before = versions(lake)
    again = dedup(lake, lst)
    assert again["merged"] == [] and again["persons_before"] == again["persons_after"] == 4
    assert versions(lake) == before

    # an older duplicate arrives: the survivor, with its faces, is merged into it; moved faces keep their ids
    new = enrol(lake, lst, faces, ["obama-720p"], fields={"obama-720p": ["Obama 720"]}, start=-60)
    out = dedup(lake, lst)
    assert groups(out) == {new["obama-720p"]: {pid["obama2"]}}
    pf2 = lake.read("person_faces", where={"list_id": lst}).to_pylist()
    assert Counter(r["person_id"] for r in pf2) == {new["obama-720p"]: 5, pid["biden"]: 2, **one_each}
    moved = {r["face_id"]: r for r in pf2 if r["person_id"] == new["obama-720p"] and r["how"] == "merged"}
    assert {r["face_id"] for r in every if r["person_id"] == pid["obama2"]} == set(moved)
    assert {r["from_person_id"] for r in moved.values()} == {pid["obama2"]}
    assert persons_of(lake, lst)[new["obama-720p"]]["fields"] == ["Obama 720", "Obama", "Barack Obama", "POTUS"]
    searcher.refresh()
    assert searcher.search([lst], q[:1], 1)[0][0][0] == new["obama-720p"]


def test_average_linkage_does_not_chain_strangers(lake, faces):
    """obama2 and biden score above 80 (a look-alike pair); obama2 is far more like the other Obama."""
    lst = catalog.create_list(lake, "chain")["list_id"]
    pid = enrol(lake, lst, faces, ["obama2", "biden", "obama"])
    single = dedup(lake, lst, threshold="80", linkage="single", dry_run=True)
    assert groups(single) == {pid["obama2"]: {pid["biden"], pid["obama"]}}  # what connected components would do
    out = dedup(lake, lst, threshold="80")
    assert groups(out) == {pid["obama2"]: {pid["obama"]}}
    assert set(persons_of(lake, lst)) == {pid["obama2"], pid["biden"]}


def test_two_faces_of_one_photo_are_never_merged(lake, faces):
    """A forged person claims the *other* face of two_people.jpg while carrying an Obama face: every face pair
    scores > 95, so only the cannot-link keeps it from two_people's Obama."""
    lst = catalog.create_list(lake, "photo")["list_id"]
    pid = enrol(lake, lst, faces, ["two_people_obama", "obama", "obama2"])
    tp_face, tp = faces["two_people_obama"]
    forged = {**persons_of(lake, lst)[pid["obama"]], "image_sha256": tp.sha256, "face_index": 1 - tp_face.index}
    lake.upsert("persons", [forged], keys=["person_id", "list_id"])
    lake.delete("person_faces", {"person_id": pid["obama"]})
    lake.append("person_faces", [created_face(forged)])
    out = dedup(lake, lst, threshold="80")
    assert out["persons_after"] == 2 and len(out["merged"]) == 1
    ((kept, merged),) = groups(out).items()
    cluster = {kept, *merged}
    assert pid["obama2"] in cluster and len(cluster & {pid["two_people_obama"], pid["obama"]}) == 1
    assert {pid["two_people_obama"], pid["obama"]} <= set(persons_of(lake, lst))


def test_cannot_link_on_a_crafted_pair():
    rng = np.random.default_rng(0)
    base = rng.normal(size=128)
    emb = np.stack([base + 0.01 * rng.normal(size=128) for _ in range(3)])
    args = dict(n_persons=3, min_similarity=0.5)
    # persons 0 and 1 are faces 0 and 1 of one photo: never together, person 2 joins the closer one
    split = cluster_persons(emb, np.arange(3), ["x", "x", "y"], [0, 1, 0], **args)
    assert len(split) == 1 and len(split[0][0]) == 2 and split[0][0] != [0, 1]
    # the same face of the same photo enrolled twice is no conflict
    assert [m for m, _ in cluster_persons(emb, np.arange(3), ["x", "x", "y"], [0, 0, 0], **args)] == [[0, 1, 2]]
    # without image hashes all three are one person
    assert [m for m, _ in cluster_persons(emb, np.arange(3), [None] * 3, [None] * 3, **args)] == [[0, 1, 2]]
    assert conflicts({"x": {0}}, {"x": {1}}) and not conflicts({"x": {0}}, {"x": {0}, "y": {3}})
    assert conflicts({"x": {0, 1}}, {"x": {0}}) and not conflicts({"x": {0, 1}}, {"z": {0}})


def test_att_faces_ten_people_three_photos_each(lake, faces):
    names = [n for n in faces if n.startswith("att/")]
    order = [names[i] for i in np.random.default_rng(1).permutation(len(names))]
    lst = catalog.create_list(lake, "att")["list_id"]
    pid = enrol(lake, lst, faces, order)
    who = {p: n.split("/")[1] for n, p in pid.items()}
    age = {pid[n]: i for i, n in enumerate(order)}
    out = dedup(lake, lst)
    final = {p: p for p in pid.values()}
    for m in out["merged"]:
        members = [m["kept"], *m["merged"]]
        assert {who[p] for p in members} == {who[m["kept"]]}  # never two people in one
        assert m["kept"] == min(members, key=age.get)  # the oldest survives
        final.update({p: m["kept"] for p in m["merged"]})
    spread = {who[p]: set() for p in final}
    for p, k in final.items():
        spread[who[p]].add(k)
    assert all(len(k) == 1 for k in spread.values())  # and each of the 10 people is one person
    assert out["persons_after"] == len(set(final.values())) == 10
    assert len(persons_of(lake, lst)) == 10


@pytest.mark.parametrize("fail", ["person_faces", "persons", "delete"])
def test_a_crash_between_commits_loses_nothing_and_a_rerun_finishes(lake, faces, monkeypatch, fail):
    lst = catalog.create_list(lake, "crash")["list_id"]
    pid = enrol(lake, lst, faces, ["obama2", "biden", "obama", "obama-480p"], fields={"obama": ["B"]})
    real_upsert, real_delete = lake.upsert, lake.delete

    def upsert(name, rows, **kw):
        if name == fail:
            raise RuntimeError("crash")
        return real_upsert(name, rows, **kw)

    def delete(name, where):
        if fail == "delete":
            raise RuntimeError("crash")
        return real_delete(name, where)

    monkeypatch.setattr(lake, "upsert", upsert)
    monkeypatch.setattr(lake, "delete", delete)
    with pytest.raises(RuntimeError, match="crash"):
        dedup(lake, lst)
    monkeypatch.undo()
    assert len(lake.read("merges", where={"list_id": lst})) == 1  # the journal was written first
    assert len(persons_of(lake, lst)) == 4  # nothing deleted yet
    out = dedup(lake, lst)
    assert out["recovered"] == [{"kept": pid["obama2"], "merged": sorted([pid["obama"], pid["obama-480p"]])}]
    assert out["merged"] == [] and out["persons_after"] == 2
    left = persons_of(lake, lst)
    assert set(left) == {pid["obama2"], pid["biden"]} and left[pid["obama2"]]["fields"] == ["B"]
    pf = [r for r in lake.read("person_faces", where={"list_id": lst}).to_pylist() if r["how"] == "merged"]
    assert sorted(r["from_person_id"] for r in pf) == sorted([pid["obama"], pid["obama-480p"]])  # once each
    assert len(lake.read("merges", where={"list_id": lst})) == 1
    before = versions(lake)
    assert dedup(lake, lst)["merged"] == [] and versions(lake) == before


def test_bad_parameters_change_nothing(lake):
    lst = catalog.create_list(lake, "x")["list_id"]
    before = versions(lake)
    with pytest.raises(NotFound):
        dedup(lake, "00000000-0000-0000-0000-000000000000")
    for bad in ("never", "70"):
        with pytest.raises(BadRequest, match="threshold"):
            dedup(lake, lst, threshold=bad)
    with pytest.raises(BadRequest, match="list_id"):
        dedup(lake, "not-a-uuid")
    assert versions(lake) == before
    empty = dedup(lake, lst)
    assert empty["persons_before"] == empty["persons_after"] == 0 and empty["merged"] == []


# `enface dedup` runs the dedup flow: against the session's Prefect server, whose set-up also binds Prefect's
# log handlers to the test's streams rather than to CliRunner's, which close after each invoke.
@pytest.mark.usefixtures("prefect_server")
def test_cli_dedup(tmp_path, faces):
    from typer.testing import CliRunner

    from enface_batch.cli import app
    from enface_batch.lake.store import Lake

    lake = Lake(tmp_path / "lake")
    lst = catalog.create_list(lake, "cli")["list_id"]
    pid = enrol(lake, lst, faces, ["obama", "biden", "obama2"])
    run = CliRunner()
    args = ["dedup", "--list-id", lst, "--lake", str(tmp_path / "lake")]
    res = run.invoke(app, [*args, "--dry-run"])
    assert res.exit_code == 0, res.output
    dry = json.loads(res.stdout.strip().splitlines()[-1])
    assert dry["dry_run"] and groups(dry) == {pid["obama"]: {pid["obama2"]}} and len(persons_of(lake, lst)) == 3
    res = run.invoke(app, [*args, "--threshold", "95"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["persons_after"] == 2
    res = run.invoke(app, [*args, "--threshold", "never"])
    assert res.exit_code == 2


def test_search_after_dedup_when_one_file_holds_several_lists(lake, faces, analyzer):
    a, b = (catalog.create_list(lake, n)["list_id"] for n in ("a", "b"))
    rows = []
    for lst in (a, b):
        for name in ("obama", "obama2", "biden"):
            face, res = faces[name]
            kw = dict(list_id=lst, source_id=None, group_id=None, drop_image=True, model="test")
            rows.append(person_row(face, res, **kw))
    lake.append("persons", rows)  # one commit, one file, both lists (as an action adding to two lists writes)
    assert dedup(lake, a)["persons_after"] == 2
    hit = Searcher(lake, analyzer.pack.embedder.dim).search([b], faces["obama"][0].embedding[None, :], 1)
    assert hit[0][0][0] == rows[3]["person_id"]
