"""`enface list|group|source|person|action` as a user runs them: seed JSON on stdout, errors as exit codes."""

from __future__ import annotations

import json
import subprocess
import sys


def enface(lake, *args: str) -> tuple[int, dict]:
    p = subprocess.run(
        [sys.executable, "-m", "enface_batch", *args, "--lake", str(lake)], capture_output=True, text=True, timeout=300
    )
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}


def test_catalog_person_and_action_commands(tmp_path, test_data):
    lake = tmp_path / "lake"
    ex = test_data / "fixtures/face_recognition_examples/examples"
    rc, out = enface(lake, "list", "create", "staff")
    assert rc == 0 and out["status"] == "ok"
    staff = out["list_id"]
    rc, out = enface(lake, "group", "create", "office", "--person-list-search", staff)
    group = out["group_id"]
    rc, out = enface(
        lake,
        "source",
        "create",
        "cam 1",
        "--group-id",
        group,
        "--uri",
        str(ex),
        "--new-person-threshold",
        "no_match",
        "--new-person-square-min",
        "50",
        "--person-list-add",
        staff,
    )
    assert rc == 0
    source = out["source_id"]
    rc, out = enface(lake, "source", "ls", "--group-id", group)
    assert [s["uri"] for s in out] == [str(ex)]  # a bare array, as the seed's /sources
    rc, out = enface(lake, "person", "create", str(ex / "obama.jpg"), "--list-id", staff, "--field", "Obama", "--bbox")
    assert rc == 0 and out["persons"][0]["created"] and len(out["persons"][0]["bbox"]) == 4
    obama = out["persons"][0]["person_id"]
    rc, out = enface(
        lake, "action", str(ex / "obama2.jpg"), str(ex / "biden.jpg"), "--source-id", source, "--results", "2"
    )
    assert rc == 0
    first, second = (r["faces"][0] for r in out["results"])
    assert first["matches"][0]["person_id"] == obama and first["decision"] == "matched"
    assert second["decision"] == "created"
    rc, out = enface(lake, "person", "get", "--person-id", obama, "--list-id", staff)
    assert out["fields"] == ["Obama"]
    rc, out = enface(lake, "list", "ls")
    assert {x["name"]: x["persons"] for x in out} == {"default": 0, "staff": 2}
    rc, out = enface(lake, "person", "delete", "--person-id", obama, "--list-id", staff)
    assert rc == 0 and out["message"] == "1 person(s) deleted"


def test_errors_print_the_seed_meaning_and_exit_non_zero(tmp_path):
    lake = tmp_path / "lake"
    rc, out = enface(lake, "person", "get", "--person-id", "00000000-0000-0000-0000-000000000000")
    assert rc == 4 and out["code"] == 404 and "not found" in out["message"]
    rc, out = enface(lake, "list", "create", "")
    assert rc == 2 and out["code"] == 400
    rc, out = enface(lake, "group", "create", "g", "--person-list-search", "nope")
    assert rc == 2 and "person_list_search" in out["message"]
