"""Enrolment from a folder-per-person tree and from a CSV manifest; reindex; the enrol flow."""

from __future__ import annotations

import shutil

import pytest

from enface_batch.ops import catalog
from enface_batch.ops.action import action
from enface_batch.ops.enrol import enrol
from enface_batch.ops.errors import BadRequest
from enface_batch.ops.search import reindex


def test_folder_tree_gives_one_person_per_folder_with_every_photo_kept(lake, analyzer, test_data):
    root = test_data / "fixtures/dlib_examples/johns"  # 5 people, 11 crops each
    staff = catalog.create_list(lake, "johns")["list_id"]
    out = enrol(lake, analyzer, str(root), list_id=staff)
    assert out["persons_created"] == 5 and out["extra_faces"] == 50 and not out["errors"]
    people = lake.read("persons").to_pylist()
    assert sorted(p["fields"][0] for p in people) == sorted(d.name for d in root.iterdir() if d.is_dir())
    # every other crop of a person finds that person first
    probe = sorted((root / "John_Savage").glob("*"))[-1]
    (face,) = action(lake, analyzer, [str(probe)], person_list_search=[staff], new_person_threshold="never")["results"][
        0
    ]["faces"]
    savage = next(p["person_id"] for p in people if p["fields"] == ["John_Savage"])
    assert face["matches"][0]["person_id"] == savage
    # enrolling the same tree again adds nothing
    again = enrol(lake, analyzer, str(root), list_id=staff)
    assert again["persons_created"] == 0 and len(again["skipped"]) == 5


def test_csv_manifest_with_lists_fields_and_grouped_rows(lake, analyzer, test_data, tmp_path):
    ex = test_data / "fixtures/face_recognition_examples/examples"
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "alex-lacamoire.png"):
        shutil.copy(ex / name, tmp_path / name)
    vip = catalog.create_list(lake, "vip")["list_id"]
    (tmp_path / "people.csv").write_text(
        "image,list,fields,person\n"
        "obama.jpg,vip,Barack Obama|president,obama\n"
        "obama2.jpg,vip,,obama\n"
        "biden.jpg,vip,Joe Biden,\n"
        "alex-lacamoire.png,,Alex,\n"
    )
    out = enrol(lake, analyzer, str(tmp_path / "people.csv"))
    assert out["persons_created"] == 3 and out["extra_faces"] == 1
    rows = {tuple(r["fields"]): r["list_id"] for r in lake.read("persons").to_pylist()}
    assert rows[("Barack Obama", "president")] == vip and rows[("Joe Biden",)] == vip
    assert rows[("Alex",)] == "13814001-1dd2-11b2-b619-5502c27ed19c"  # no list: the default list
    (tmp_path / "bad.csv").write_text("image,list\nobama.jpg,no such list\n")
    with pytest.raises(BadRequest, match="no such list"):
        enrol(lake, analyzer, str(tmp_path / "bad.csv"))


def test_a_manifest_that_is_a_fifo_or_not_text_is_refused_at_once(lake, analyzer, tmp_path):
    import os
    import threading

    os.mkfifo(tmp_path / "people.csv")  # opening it for reading would wait for a writer forever
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x9c" * 100)
    errors: list[str] = []

    def run() -> None:
        for name in ("people.csv", "binary.csv"):
            with pytest.raises(BadRequest) as info:
                enrol(lake, analyzer, str(tmp_path / name))
            errors.append(str(info.value))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "enrol blocked on a FIFO manifest"
    assert "people.csv" in errors[0] and "FIFO" in errors[0]
    assert "binary.csv" in errors[1] and "cannot read the manifest" in errors[1]


def test_reindex_rebuilds_every_list_from_the_table(lake, analyzer, test_data):
    enrol(lake, analyzer, str(test_data / "fixtures/dlib_examples/johns"))
    out = reindex(lake, analyzer.pack.embedder.dim)
    assert out["lists"]["13814001-1dd2-11b2-b619-5502c27ed19c"] == {"persons": 5, "kind": "flat"}
    assert lake.fs.exists(lake.path("_index", "13814001-1dd2-11b2-b619-5502c27ed19c.faiss"))


@pytest.mark.usefixtures("prefect_server")
def test_enrol_flow_runs_under_prefect(tmp_path, test_data):
    from enface_batch.flows.maintenance import enrol_flow
    from enface_batch.lake.store import Lake

    lake = Lake(tmp_path / "lake")
    out = enrol_flow(str(test_data / "fixtures/dlib_examples/johns"), lake=lake.uri)
    assert out["persons_created"] == 5
