"""`enface apply FILE.yaml`: declarative lists, groups and sources, on a lake in a folder and on S3."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from enface_batch.lake.schemas import DEFAULT_GROUP_ID, DEFAULT_LIST_ID, TABLES
from enface_batch.lake.store import Lake
from enface_batch.ops import catalog, config
from enface_batch.ops.errors import BadRequest, EnfaceError, NotFound

ROOT = Path(__file__).resolve().parents[1]

BASE = """
lists:
  - name: staff
  - name: visitors
groups:
  - name: office cameras
    person_list_search: [staff, visitors, default]
sources:
  - name: cam 1
    group: office cameras
    uri: ${ENFACE_TEST_ARCHIVE}
    new_person_threshold: no_match
    new_person_square_min: 50
    new_person_angle_max: 30
    person_list_add: [staff]
    feature_check: [gender, age]
  - name: cam 2
    group: office cameras
"""


def write(tmp_path: Path, text: str, name: str = "enface.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def versions(lake: Lake) -> dict:
    return {t: lake.version(t) for t in TABLES}


@pytest.fixture(autouse=True)
def archive_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ENFACE_TEST_ARCHIVE", str(tmp_path / "archive"))
    monkeypatch.delenv("ENFACE_UNSET_FOR_TEST", raising=False)


def test_first_apply_creates_everything_and_the_second_writes_nothing(lake, tmp_path):
    path = write(tmp_path, BASE)
    out = config.apply(lake, path)
    assert out["status"] == "ok"
    assert out["lists"] == {"created": ["staff", "visitors"], "updated": [], "unchanged": []}
    assert out["groups"] == {"created": ["office cameras"], "updated": [], "unchanged": []}
    assert out["sources"] == {"created": ["cam 1", "cam 2"], "updated": [], "unchanged": []}

    lists = {x["name"]: x["list_id"] for x in catalog.list_lists(lake)}
    assert lists == {"default": DEFAULT_LIST_ID, **out["ids"]["lists"]}
    (group,) = [g for g in catalog.list_groups(lake) if g["name"] == "office cameras"]
    assert group["group_id"] == out["ids"]["groups"]["office cameras"]
    # names resolve to ids, in the file's order; "default" is the seed's default list
    assert group["person_list_search"] == [lists["staff"], lists["visitors"], DEFAULT_LIST_ID]
    sources = {s["name"]: s for s in catalog.list_sources(lake, group["group_id"])}
    cam1, cam2 = sources["cam 1"], sources["cam 2"]
    assert cam1["source_id"] == out["ids"]["sources"]["cam 1"]
    assert cam1["uri"] == str(tmp_path / "archive")
    assert (cam1["new_person_threshold"], cam1["new_person_square_min"], cam1["new_person_angle_max"]) == (
        "no_match",
        50,
        30,
    )
    assert cam1["person_list_add"] == [lists["staff"]] and cam1["feature_check"] == ["gender", "age"]
    # omitted keys take the seed's /source/create defaults
    assert {k: cam2[k] for k in config.SOURCE_DEFAULTS} == config.SOURCE_DEFAULTS

    before = versions(lake)
    again = config.apply(lake, path)
    assert versions(lake) == before  # no Delta commit at all
    assert again["lists"]["unchanged"] == ["staff", "visitors"]
    assert again["groups"]["unchanged"] == ["office cameras"]
    assert again["sources"]["unchanged"] == ["cam 1", "cam 2"]
    assert again["ids"] == out["ids"]


def test_an_edited_threshold_updates_that_source_in_place_and_nothing_else(lake, tmp_path):
    out = config.apply(lake, write(tmp_path, BASE))
    before = versions(lake)
    rows_before = {s["source_id"]: s for s in catalog.list_sources(lake)}
    edited = write(tmp_path, BASE.replace("new_person_threshold: no_match", "new_person_threshold: 90"))

    dry = config.apply(lake, edited, dry_run=True)
    assert versions(lake) == before
    assert dry["dry_run"] and dry["sources"] == {"created": [], "updated": ["cam 1"], "unchanged": ["cam 2"]}

    upd = config.apply(lake, edited)
    assert upd["sources"] == dry["sources"] and upd["ids"] == out["ids"]
    assert upd["lists"]["unchanged"] == ["staff", "visitors"] and upd["groups"]["unchanged"] == ["office cameras"]
    after = versions(lake)
    assert {t for t in TABLES if after[t] != before[t]} == {"sources"}
    assert after["sources"] == before["sources"] + 1  # one commit
    rows_after = {s["source_id"]: s for s in catalog.list_sources(lake)}
    assert rows_after.keys() == rows_before.keys()  # same ids, no row added
    sid = out["ids"]["sources"]["cam 1"]
    assert rows_after[sid]["new_person_threshold"] == "90"
    assert {**rows_after[sid], "new_person_threshold": "no_match"} == rows_before[sid]
    assert all(rows_after[k] == rows_before[k] for k in rows_before if k != sid)


def test_group_search_update_and_references_to_existing_lists_and_groups(lake, tmp_path):
    vip = catalog.create_list(lake, "vip")["list_id"]
    config.apply(lake, write(tmp_path, BASE))
    text = f"""
    groups:
      - name: office cameras
        person_list_search: [vip, staff]    # existing lists, by name
    sources:
      - name: cam 3
        group: {DEFAULT_GROUP_ID}  # an existing group by id
        person_list_add: [{vip}]  # an existing list by id
    """
    before = versions(lake)
    out = config.apply(lake, write(tmp_path, text, "more.yaml"))
    assert out["groups"]["updated"] == ["office cameras"] and out["sources"]["created"] == ["cam 3"]
    lists = {x["name"]: x["list_id"] for x in catalog.list_lists(lake)}
    (group,) = [g for g in catalog.list_groups(lake) if g["name"] == "office cameras"]
    assert group["person_list_search"] == [vip, lists["staff"]]
    (cam3,) = [s for s in catalog.list_sources(lake, DEFAULT_GROUP_ID) if s["name"] == "cam 3"]
    assert cam3["person_list_add"] == [vip]
    after = versions(lake)
    assert after["person_lists"] == before["person_lists"]
    assert after["source_groups"] == before["source_groups"] + 1


def test_relative_uris_resolve_against_the_file_folder(lake, tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    text = """
    sources:
      - {name: rel, group: default, uri: photos/2024}
      - {name: up, group: default, uri: ../other}
      - {name: home, group: default, uri: ~/pics}
      - {name: remote, group: default, uri: s3://bucket/prefix}
    """
    out = config.apply(lake, write(sub, text))
    got = {s["name"]: s["uri"] for s in catalog.list_sources(lake, DEFAULT_GROUP_ID)}
    assert got["rel"] == str(sub / "photos" / "2024")
    assert got["up"] == str(tmp_path / "other")
    assert got["home"] == str(Path.home() / "pics")
    assert got["remote"] == "s3://bucket/prefix"
    assert out["sources"]["created"] == ["rel", "up", "home", "remote"]


S = "sources:\n  - {name: s, group: default, "  # a source of the default group, to finish with settings
BAD = [
    (S + "new_person_treshold: 90}\n", BadRequest, "sources[0].new_person_treshold"),
    ("lists:\n  - {name: a, colour: red}\n", BadRequest, "lists[0].colour"),
    ("list:\n  - {name: a}\n", BadRequest, "list"),
    (S + "new_person_threshold: 75}\n", BadRequest, "new_person_threshold"),
    (S + "new_person_square_min: 64}\n", BadRequest, "new_person_square_min"),
    (S + "feature_check: [mood]}\n", BadRequest, "feature_check"),
    ("sources:\n  - {name: s, group: nowhere}\n", NotFound, "nowhere"),
    ("groups:\n  - {name: g, person_list_search: [staff, nobody]}\n", NotFound, "nobody"),
    ("lists:\n  - {name: a}\n  - {name: a}\n", BadRequest, "duplicate list"),
    ("groups:\n  - {name: g}\n  - {name: g}\n", BadRequest, "duplicate group"),
    ("sources:\n  - {name: s, group: default}\n  - {name: s, group: default}\n", BadRequest, "duplicate source"),
    (S + "uri: '${ENFACE_UNSET_FOR_TEST}/x'}\n", BadRequest, "ENFACE_UNSET_FOR_TEST"),
    ("lists:\n  - {name: ''}\n", BadRequest, "lists[0].name"),
    ("sources:\n  - {name: s}\n", BadRequest, "sources[0].group"),
    ("lists: [a: 1: 2\n", BadRequest, "not valid YAML"),
]


def test_a_bad_file_raises_naming_the_problem_and_changes_nothing(lake, tmp_path):
    # a good part (a new list, a changed group) must not be written when another part of the file is bad
    config.apply(lake, write(tmp_path, "lists:\n  - {name: staff}\ngroups:\n  - {name: g0}\n", "first.yaml"))
    good = "lists:\n  - {name: fresh}\ngroups:\n  - {name: g0, person_list_search: [staff]}\n"
    before = versions(lake)
    for text, exc, needle in BAD:
        path = write(tmp_path, text if text.startswith(("lists", "groups")) else text + good)
        with pytest.raises(exc) as info:
            config.apply(lake, path)
        assert needle in info.value.message, (needle, info.value.message)
        assert versions(lake) == before, needle


def test_update_functions_validate_like_create(lake):
    gid = catalog.create_group(lake, "g")["group_id"]
    sid = catalog.create_source(lake, "s", gid)["source_id"]
    with pytest.raises(NotFound):
        catalog.update_group(lake, gid, person_list_search=["00000000-0000-0000-0000-000000000000"])
    with pytest.raises(BadRequest, match="new_person_threshold"):
        catalog.update_source(lake, sid, new_person_threshold="75")
    with pytest.raises(BadRequest, match="unknown source setting"):
        catalog.update_source(lake, sid, colour="red")
    with pytest.raises(BadRequest, match="uri"):
        catalog.update_source(lake, sid, uri=" ")
    before = catalog.get_source(lake, sid)
    catalog.update_source(lake, sid, new_person_square_min="224", feature_check="race")
    after = catalog.get_source(lake, sid)
    assert after == {**before, "new_person_square_min": 224, "feature_check": ["race"]}


def test_example_config_loads_and_names_an_unset_variable(monkeypatch, tmp_path):
    example = ROOT / "configs" / "example.yaml"
    monkeypatch.delenv("ENFACE_DEMO_DIR", raising=False)
    with pytest.raises(EnfaceError, match="ENFACE_DEMO_DIR"):
        config.load(example)
    monkeypatch.setenv("ENFACE_DEMO_DIR", str(tmp_path / "demo"))
    cfg = config.load(example)
    (src,) = cfg.sources
    assert src["uri"] == str(tmp_path / "demo") and src["group"] == "demo"
    assert src["new_person_threshold"] == "no_match" and src["person_list_add"] == ["demo people"]


def enface(*args: str, env: dict | None = None) -> tuple[int, dict, str]:
    p = subprocess.run(
        [sys.executable, "-m", "enface_batch", *args], capture_output=True, text=True, timeout=120, env=env
    )
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}, p.stderr


def test_cli_apply_prints_the_summary_and_fails_on_a_bad_file(tmp_path):
    import os

    lake = tmp_path / "lake"
    env = {**os.environ, "ENFACE_DEMO_DIR": str(tmp_path / "demo")}
    example = str(ROOT / "configs" / "example.yaml")
    rc, out, _ = enface("apply", example, "--lake", str(lake), "--dry-run", env=env)
    assert rc == 0 and out["dry_run"] and out["sources"]["created"] == ["demo photos"]
    assert not lake.exists()  # a dry run does not even create the lake
    rc, out, _ = enface("apply", example, "--lake", str(lake), env=env)
    assert rc == 0 and out["status"] == "ok"
    assert out["lists"]["created"] == ["demo people"] and out["groups"]["created"] == ["demo"]
    sid = out["ids"]["sources"]["demo photos"]
    src = catalog.get_source(Lake(lake), sid)
    assert src["uri"] == str(tmp_path / "demo") and src["new_person_square_min"] == 50
    rc, again, _ = enface("apply", example, "--lake", str(lake), env=env)
    assert rc == 0 and again["sources"]["unchanged"] == ["demo photos"] and again["ids"] == out["ids"]

    bad = write(tmp_path, "sources:\n  - {name: s, group: default, new_person_treshold: 90}\n")
    rc, out, err = enface("apply", str(bad), "--lake", str(lake), env=env)
    assert rc == 2 and out["status"] == "error" and "sources[0].new_person_treshold" in out["message"]
    assert "new_person_treshold" in err
