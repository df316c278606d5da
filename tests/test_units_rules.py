"""The action's rules without models: which value wins (request > source > group > default), where each came
from (`origin`, kept in every actions row), and what a face's decision is under them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enface_batch.analyze import Analyzer, Face
from enface_batch.lake.schemas import DEFAULT_GROUP_ID, DEFAULT_LIST_ID, DEFAULT_SOURCE_ID
from enface_batch.lake.store import Lake
from enface_batch.ops import catalog
from enface_batch.ops.action import ActionEngine, resolve_rules
from enface_batch.ops.errors import BadRequest, NotFound
from enface_batch.scoring import calibration_for

CAL = calibration_for("sface_2021dec.onnx")
MISSING_LIST = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Lists a and b; group g searches a, group e searches nothing; source s (in g) has every rule set."""
    lake = Lake(tmp_path_factory.mktemp("rules") / "lake")
    a = catalog.create_list(lake, "a")["list_id"]
    b = catalog.create_list(lake, "b")["list_id"]
    g = catalog.create_group(lake, "g", [a])["group_id"]
    e = catalog.create_group(lake, "e")["group_id"]
    s = catalog.create_source(
        lake,
        "s",
        g,
        new_person_threshold="90",
        new_person_square_min=50,
        new_person_angle_max=40,
        person_list_add=[b],
        feature_check=["age"],
    )["source_id"]
    bare = catalog.create_source(lake, "bare", e)["source_id"]  # the /source/create defaults
    return {"lake": lake, "a": a, "b": b, "g": g, "e": e, "s": s, "bare": bare}


def test_no_group_no_source_takes_the_seeds_action_defaults(world):
    r = resolve_rules(world["lake"], CAL)
    assert (r.source_id, r.group_id) == (DEFAULT_SOURCE_ID, DEFAULT_GROUP_ID)
    assert (r.new_person_threshold, r.new_person_square_min, r.new_person_yaw_max) == ("no_match", 112, 30)
    assert r.person_list_add == [DEFAULT_LIST_ID] and r.person_list_search == [DEFAULT_LIST_ID]
    assert r.threshold_score == CAL.no_match and r.feature_check == []
    assert r.origin == {
        "new_person_threshold": "default",
        "new_person_square_min": "default",
        "new_person_yaw_max": "default",
        "person_list_add": "default",
        "feature_check": "default",
        "person_list_search": "group",  # the default group searches the default list
    }


def test_a_source_supplies_its_rules_and_its_group_the_lists_to_search(world):
    r = resolve_rules(world["lake"], CAL, source_id=world["s"])
    assert (r.source_id, r.group_id) == (world["s"], world["g"])
    assert (r.new_person_threshold, r.new_person_square_min, r.new_person_yaw_max) == ("90", 50, 40)
    assert r.threshold_score == CAL.threshold("90")
    assert r.person_list_add == [world["b"]] and r.feature_check == ["age"]
    assert r.person_list_search == [world["a"]]
    assert set(r.origin.values()) == {"source", "group"} and r.origin["person_list_search"] == "group"


def test_request_values_win_over_the_source_and_empty_ones_do_not_count(world):
    r = resolve_rules(
        world["lake"],
        CAL,
        source_id=world["s"],
        new_person_threshold="95",
        new_person_square_min="224",
        new_person_yaw_max=10,
        person_list_add=[world["a"]],
        person_list_search=[world["b"]],
        feature_check=[],  # empty: the source's ["age"] stays
    )
    assert (r.new_person_threshold, r.new_person_square_min, r.new_person_yaw_max) == ("95", 224, 10)
    assert r.person_list_add == [world["a"]] and r.person_list_search == [world["b"]]
    assert r.feature_check == ["age"] and r.origin["feature_check"] == "source"
    assert {k for k, v in r.origin.items() if v == "request"} == {
        "new_person_threshold",
        "new_person_square_min",
        "new_person_yaw_max",
        "person_list_add",
        "person_list_search",
    }
    # the origin map travels with every action row
    assert json.loads(r.to_json())["origin"] == r.origin


def test_a_group_without_lists_searches_the_default_list(world):
    r = resolve_rules(world["lake"], CAL, source_id=world["bare"])
    assert r.person_list_search == [DEFAULT_LIST_ID] and r.origin["person_list_search"] == "default"
    # and a bare source has the /source/create defaults: never create
    assert (r.new_person_threshold, r.threshold_score, r.new_person_yaw_max) == ("never", None, 60)
    r = resolve_rules(world["lake"], CAL, group_id=world["g"])  # a group alone: its lists, the default source
    assert r.person_list_search == [world["a"]] and r.source_id == DEFAULT_SOURCE_ID


def test_never_ignores_the_add_lists_other_thresholds_check_them(world):
    lake = world["lake"]
    r = resolve_rules(lake, CAL, new_person_threshold="never", person_list_add=[MISSING_LIST])
    assert r.threshold_score is None
    with pytest.raises(NotFound, match="person_list_add"):
        resolve_rules(lake, CAL, new_person_threshold="90", person_list_add=[MISSING_LIST])
    with pytest.raises(NotFound, match="person_list_search"):
        resolve_rules(lake, CAL, person_list_search=[MISSING_LIST])


def test_bad_values_and_a_source_of_another_group_are_refused(world):
    lake = world["lake"]
    with pytest.raises(BadRequest, match=f"belongs to group {world['g']}"):
        resolve_rules(lake, CAL, source_id=world["s"], group_id=world["e"])
    assert resolve_rules(lake, CAL, source_id=world["s"], group_id=world["g"]).group_id == world["g"]
    for bad in ({"new_person_square_min": 100}, {"new_person_yaw_max": 45}, {"new_person_threshold": "75"}):
        with pytest.raises(BadRequest, match=next(iter(bad))):
            resolve_rules(lake, CAL, **bad)


def _face(square: float, yaw: float) -> Face:
    return Face(0, [0, 0, square, square], [], 0.9, [], square, yaw, 0, 0, np.ones(4, np.float32), np.zeros(0))


@pytest.mark.parametrize(
    ("threshold", "adds", "square", "yaw", "decision"),
    [
        ("90", "b", 120, 10, "create"),
        ("90", "b", 111, 10, "below_square"),  # square under new_person_square_min (112)
        ("90", "b", 112, -30, "create"),  # the bounds are inclusive, and yaw counts either way
        ("90", "b", 120, -31, "above_yaw"),
        ("90", None, 120, 10, "no_add_list"),
        ("never", "b", 10, 80, "never"),  # never wins over every other rule
    ],
)
def test_decision_per_face(world, threshold, adds, square, yaw, decision):
    r = resolve_rules(
        world["lake"],
        CAL,
        source_id=world["s"],
        new_person_threshold=threshold,
        new_person_square_min=112,
        new_person_yaw_max=30,
    )
    r.person_list_add = [world[adds]] if adds else []
    assert ActionEngine._decision(_face(square, yaw), r) == decision


def test_action_with_the_fake_pack_creates_then_matches_and_keeps_every_outcome(tmp_path):
    from fakepack import identity_photo, write_pack

    from enface_batch.models import load_pack
    from enface_batch.ops.action import action

    an = Analyzer(load_pack(str(write_pack(tmp_path / "pack", identities=True)), threads=1))
    lake = Lake(tmp_path / "lake")
    ann1, ann2, bob = (
        identity_photo(tmp_path / f"{n}.png", i, k) for n, i, k in (("a1", 1, 0), ("a2", 1, 1), ("b", 2, 0))
    )
    small = action(lake, an, [str(ann1)])  # the seed's defaults: square 112, and the fake face is 96 px
    assert small["results"][0]["faces"][0]["decision"] == "below_square"
    out = action(lake, an, [str(ann1), str(ann2), str(bob)], new_person_square_min=50)
    first, again, other = (r["faces"][0] for r in out["results"])
    assert first["decision"] == "created" and other["decision"] == "created"
    assert (
        again["decision"] == "matched" and again["matches"][0]["person_id"] == first["persons_created"][0]["person_id"]
    )
    assert again["matches"][0]["score"] >= 95
    assert action(lake, an, [str(bob)], new_person_threshold="never")["results"][0]["faces"][0]["decision"] == "never"
    actions = sorted(lake.read("actions").to_pylist(), key=lambda a: a["created"])
    assert [a["decision"] for a in actions] == ["below_square", "created", "matched", "created", "never"]
    assert json.loads(actions[1]["rules"])["origin"]["new_person_square_min"] == "request"
    assert lake.read("persons").num_rows == 2
