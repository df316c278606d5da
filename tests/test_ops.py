"""The Enface operations over a lake, on real photos, with the lake in a folder and on a real S3 endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from enface_batch.lake.schemas import DEFAULT_LIST_ID, TABLES
from enface_batch.ops import catalog, persons
from enface_batch.ops.action import action
from enface_batch.ops.errors import BadRequest, NotFound

EX = "fixtures/face_recognition_examples/examples"


@pytest.fixture
def ex(test_data) -> Path:
    return test_data / EX


def versions(lake) -> dict:
    return {t: lake.version(t) for t in TABLES}


def faces_of(out: dict) -> list[dict]:
    return [f for r in out["results"] for f in r["faces"]]


def test_defaults_exist(lake):
    lists = catalog.list_lists(lake)
    assert [x["list_id"] for x in lists] == [DEFAULT_LIST_ID]
    (group,) = catalog.list_groups(lake)
    assert group["person_list_search"] == [DEFAULT_LIST_ID]
    (source,) = catalog.list_sources(lake)
    assert source["group_id"] == group["group_id"]


def test_enrolled_person_is_found_first_and_strangers_are_not(lake, analyzer, ex):
    vip = catalog.create_list(lake, "vip")["list_id"]
    made = persons.create_person(lake, analyzer, str(ex / "obama.jpg"), list_id=vip, fields=["Barack Obama"])
    pid = made["persons"][0]["person_id"]
    same = action(
        lake,
        analyzer,
        [str(ex / n) for n in ("obama2.jpg", "obama-480p.jpg", "obama-720p.jpg")],
        person_list_search=[vip],
        new_person_threshold="never",
        results=3,
    )
    for face in faces_of(same):
        assert face["matches"][0]["person_id"] == pid
        assert face["matches"][0]["score"] >= 85  # no_match
    others = action(
        lake,
        analyzer,
        [str(ex / n) for n in ("biden.jpg", "alex-lacamoire.png", "lin-manuel-miranda.png")],
        person_list_search=[vip],
        new_person_threshold="never",
    )
    assert all(m["score"] < 85 for f in faces_of(others) for m in f["matches"])
    assert persons.get_person(lake, pid, vip)["fields"] == ["Barack Obama"]


def test_auto_enrolment_creates_one_person_per_distinct_person(lake, analyzer, ex):
    imgs = [
        "obama.jpg",
        "biden.jpg",
        "two_people.jpg",
        "obama2.jpg",
        "alex-lacamoire.png",
        "lin-manuel-miranda.png",
        "obama-720p.jpg",
        "obama_small.jpg",
    ]
    out = action(lake, analyzer, [str(ex / n) for n in imgs], multi=True, new_person_square_min=50)
    created = [c for f in faces_of(out) for c in f["persons_created"]]
    assert len(created) == 4  # Obama, Biden, Alex Lacamoire, Lin-Manuel Miranda
    two = next(r for r in out["results"] if r["image"].endswith("two_people.jpg"))
    assert {f["decision"] for f in two["faces"]} == {"matched"}  # both met already
    assert catalog.list_lists(lake)[0]["persons"] == 4
    # the actions table has one row per face, with the rules that decided
    acts = lake.read("actions").to_pylist()
    assert len(acts) == sum(len(r["faces"]) for r in out["results"])
    assert json.loads(acts[0]["rules"])["origin"]["new_person_square_min"] == "request"


def test_two_faces_of_one_photo_are_never_the_same_new_person(lake, analyzer, ex, tmp_path):
    a, b = Image.open(ex / "obama.jpg").convert("RGB"), Image.open(ex / "obama2.jpg").convert("RGB")
    h = max(a.height, b.height)
    both = Image.new("RGB", (a.width + b.width, h))
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    both.save(tmp_path / "twice.jpg")
    out = action(lake, analyzer, [str(tmp_path / "twice.jpg")], multi=True, new_person_square_min=50)
    faces = faces_of(out)
    assert len(faces) == 2 and all(f["decision"] == "created" for f in faces)
    assert faces[0]["persons_created"][0]["person_id"] not in [m["person_id"] for m in faces[1]["matches"]]


def test_square_and_yaw_rules_block_small_and_turned_faces(lake, analyzer, ex, test_data):
    small = action(lake, analyzer, [str(ex / "obama-240p.jpg")], new_person_square_min=224)
    assert faces_of(small)[0]["decision"] == "below_square"
    profile = test_data / "fixtures/deepface_tests/images/img59.jpg"  # a frontal face and a profile
    turned = action(lake, analyzer, [str(profile)], multi=True, new_person_square_min=50, new_person_yaw_max=30)
    decisions = sorted(f["decision"] for f in faces_of(turned))
    assert decisions == ["above_yaw", "created"]
    assert catalog.list_lists(lake)[0]["persons"] == 1


def test_never_creates_nothing_and_ignores_the_other_rules(lake, analyzer, ex):
    before = lake.version("persons")
    out = action(
        lake,
        analyzer,
        [str(ex / "obama.jpg"), str(ex / "biden.jpg")],
        new_person_threshold="never",
        person_list_add=["00000000-0000-0000-0000-000000000000"],
    )  # would be a 404 otherwise
    assert {f["decision"] for f in faces_of(out)} == {"never"}
    assert lake.version("persons") == before


def test_source_rules_apply_when_the_request_leaves_them_out(lake, analyzer, ex):
    vip = catalog.create_list(lake, "vip")["list_id"]
    group = catalog.create_group(lake, "cams", [vip])["group_id"]
    src = catalog.create_source(
        lake, "cam1", group, new_person_threshold="90", new_person_square_min=50, person_list_add=[vip]
    )["source_id"]
    out = action(lake, analyzer, [str(ex / "biden.jpg")], source_id=src)
    (face,) = faces_of(out)
    assert face["decision"] == "created" and face["persons_created"][0]["list_id"] == vip
    rules = json.loads(lake.read("actions").to_pylist()[0]["rules"])
    assert rules["new_person_threshold"] == "90" and rules["origin"]["new_person_threshold"] == "source"
    assert rules["person_list_search"] == [vip] and rules["origin"]["person_list_search"] == "group"
    # a plain source (threshold never by default) creates nothing
    plain = catalog.create_source(lake, "cam2", group)["source_id"]
    assert faces_of(action(lake, analyzer, [str(ex / "alex-lacamoire.png")], source_id=plain))[0]["decision"] == "never"


def test_update_delete_replace_and_drop_image(lake, analyzer, ex):
    made = persons.create_person(lake, analyzer, str(ex / "obama.jpg"), fields=["a"])
    pid = made["persons"][0]["person_id"]
    row = lake.read("persons", where={"person_id": pid}).to_pylist()[0]
    assert row["image"] and row["thumb"] and row["image_uri"].endswith("obama.jpg")
    assert persons.update_person(lake, pid, fields=["b", "c"])["status"] == "ok"
    assert persons.get_person(lake, pid)["fields"] == ["b", "c"]
    persons.update_person(lake, pid, drop_image=True)
    row = lake.read("persons", where={"person_id": pid}).to_pylist()[0]
    assert row["image"] is None and row["thumb"] is None and row["image_uri"] is None and row["embedding"]
    # replace: same id, new face, fields kept
    old_emb = np.asarray(row["embedding"])
    rep = persons.create_person(lake, analyzer, str(ex / "biden.jpg"), replace_person_id=pid)
    assert rep["persons"][0]["person_id"] == pid and rep["message"] == "1 person(s) replaced"
    new = lake.read("persons", where={"person_id": pid}).to_pylist()
    assert len(new) == 1 and new[0]["fields"] == ["b", "c"]
    assert float(old_emb @ np.asarray(new[0]["embedding"])) < 0.5
    # the index follows: Biden now finds this person, Obama does not
    hit = action(lake, analyzer, [str(ex / "biden.jpg")], new_person_threshold="never")
    assert faces_of(hit)[0]["matches"][0]["person_id"] == pid and faces_of(hit)[0]["matches"][0]["score"] > 90
    assert persons.delete_person(lake, pid)["message"] == "1 person(s) deleted"
    with pytest.raises(NotFound):
        persons.get_person(lake, pid)
    gone = action(lake, analyzer, [str(ex / "biden.jpg")], new_person_threshold="never")
    assert faces_of(gone)[0]["matches"] == []


def test_person_create_is_a_duplicate_check_and_drop_image_keeps_only_the_embedding(lake, analyzer, ex):
    first = persons.create_person(lake, analyzer, str(ex / "obama.jpg"), drop_image=True)
    assert first["persons"][0]["created"]
    again = persons.create_person(lake, analyzer, str(ex / "obama2.jpg"))
    assert not again["persons"][0]["created"]
    assert again["persons"][0]["match"]["person_id"] == first["persons"][0]["person_id"]
    row = lake.read("persons").to_pylist()[0]
    assert row["image"] is None and row["thumb"] is None and len(row["embedding"]) == 128


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lk, an, ex: catalog.create_list(lk, ""), "name"),
        (lambda lk, an, ex: catalog.create_list(lk, "x" * 101), "name"),
        (lambda lk, an, ex: catalog.create_group(lk, "g", ["not-a-uuid"]), "person_list_search"),
        (
            lambda lk, an, ex: catalog.create_source(
                lk, "s", "13814001-1dd2-11b2-b619-5502c27ed19d", new_person_threshold="70"
            ),
            "new_person_threshold",
        ),
        (
            lambda lk, an, ex: catalog.create_source(
                lk, "s", "13814001-1dd2-11b2-b619-5502c27ed19d", new_person_square_min=100
            ),
            "new_person_square_min",
        ),
        (lambda lk, an, ex: action(lk, an, [str(ex / "obama.jpg")], results=0), "results"),
        (lambda lk, an, ex: action(lk, an, [str(ex / "obama.jpg")], results=101), "results"),
        (lambda lk, an, ex: action(lk, an, [str(ex / "obama.jpg")], new_person_yaw_max=45), "new_person_yaw_max"),
        (lambda lk, an, ex: action(lk, an, [str(ex / "obama.jpg")], feature_check=["mood"]), "feature_check"),
        (lambda lk, an, ex: persons.create_person(lk, an, str(ex / "obama.jpg"), fields=["x" * 70_000]), "64 KB"),
        (lambda lk, an, ex: persons.create_person(lk, an, b"not an image"), "not an image"),
    ],
)
def test_bad_parameters_give_clear_errors_and_change_nothing(lake, analyzer, ex, call, message):
    before = versions(lake)
    with pytest.raises(BadRequest, match=message):
        call(lake, analyzer, ex)
    assert versions(lake) == before


def test_unknown_ids_are_not_found_and_change_nothing(lake, analyzer, ex):
    before = versions(lake)
    missing = "00000000-0000-0000-0000-000000000000"
    for call in (
        lambda: catalog.create_source(lake, "s", missing),
        lambda: action(lake, analyzer, [str(ex / "obama.jpg")], source_id=missing),
        lambda: action(lake, analyzer, [str(ex / "obama.jpg")], person_list_search=[missing]),
        lambda: persons.update_person(lake, missing, fields=["x"]),
        lambda: persons.delete_person(lake, missing),
        lambda: persons.create_person(lake, analyzer, str(ex / "obama.jpg"), replace_person_id=missing),
    ):
        with pytest.raises(NotFound):
            call()
    assert versions(lake) == before


def test_reads_still_filter_after_a_merge_rewrote_a_file_of_several_persons(lake, analyzer, ex):
    # one action writes both persons of two_people.jpg into one file; an update rewrites it (string_view)
    out = action(lake, analyzer, [str(ex / "two_people.jpg")], multi=True, new_person_square_min=50)
    a, b = (f["persons_created"][0]["person_id"] for f in faces_of(out))
    persons.update_person(lake, a, fields=["first"])
    assert persons.get_person(lake, a)["fields"] == ["first"] and persons.get_person(lake, b)["fields"] == []
    again = action(lake, analyzer, [str(ex / "biden.jpg")], new_person_threshold="never")
    assert faces_of(again)[0]["matches"][0]["person_id"] in (a, b)
