"""`enface lake optimize` and `enface lake vacuum` on a lake made by many real scan runs, and the scan flow's
upkeep every ENFACE_OPTIMIZE_EVERY runs: fewer files, the same rows, readers' files kept within the retention."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enface_batch.lake.schemas import SOURCE_DEFAULTS, TABLES
from enface_batch.lake.store import Lake
from enface_batch.ops import catalog

RUNS = 10


def enface(lake: Lake, *args: str) -> tuple[int, dict, str]:
    p = subprocess.run(
        [sys.executable, "-m", "enface_batch", "lake", *args, "--lake", lake.uri],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else {}, p.stderr


def make_source(lake: Lake, folder: Path) -> tuple[str, str]:
    """The scan flow tests' source, with the seed's angle rule and no attributes; and its list's id."""
    from test_scan_flow import setup_source

    source = setup_source(
        lake, str(folder), new_person_angle_max=SOURCE_DEFAULTS["new_person_angle_max"], feature_check=[]
    )
    return source, catalog.get_source(lake, source)["person_list_add"][0]


def rows(lake: Lake) -> dict:
    """Every table's rows, sorted, without the heavy columns: what compaction must not change."""
    out = {}
    for name, schema in TABLES.items():
        cols = [f for f in schema.names if f not in ("embedding", "image", "thumb")]
        out[name] = sorted(
            json.dumps(r, sort_keys=True, default=str) for r in lake.read(name, columns=cols).to_pylist()
        )
    return out


def data_files_on_disk(root: Path) -> int:
    return sum(1 for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)


def test_optimize_and_vacuum_after_many_runs(tmp_path, test_data, analyzer):
    from enface_batch.ops.dedup import dedup
    from enface_batch.scan import scan_source

    photos = sorted((test_data / "lfw_dev" / "images").rglob("*.jpg"))[:RUNS]
    folder = tmp_path / "photos"
    folder.mkdir()
    lake = Lake(tmp_path / "lake")
    source, people = make_source(lake, folder)
    for photo in photos:  # a nightly job that finds one new photo each night
        shutil.copy(photo, folder / photo.name)
        scan_source(lake, analyzer, source)
    dedup(lake, people, threshold="80")  # merges leave replaced files behind
    before = rows(lake)
    active = {name: lake.data_files(name) for name in TABLES}
    assert active["faces"] >= RUNS and active["images"] >= RUNS

    # Nothing is older than the 7-day retention yet: vacuum deletes nothing, and refuses a shorter retention.
    rc, out, _ = enface(lake, "vacuum", "--dry-run")
    assert rc == 0 and out["would_delete"] == 0
    rc, _, err = enface(lake, "vacuum", "--retention-hours", "1")
    assert rc == 2 and "168" in err

    rc, out, _ = enface(lake, "optimize")
    assert rc == 0, out
    assert out["tables"]["faces"] == {**out["tables"]["faces"], "files_before": active["faces"], "files_after": 1}
    assert all(t["files_after"] <= 1 for t in out["tables"].values())
    assert rows(lake) == before
    assert data_files_on_disk(Path(lake.uri)) > sum(t["files_after"] for t in out["tables"].values())

    # Time passes (here: the retention is shortened): vacuum lists, then deletes, only files no version uses.
    for name in TABLES:
        lake.table(name).alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 hours"})
    rc, listed, _ = enface(lake, "vacuum", "--retention-hours", "0", "--dry-run")
    assert rc == 0 and listed["would_delete"] > 0
    assert all(p.endswith(".parquet") for t in listed["tables"].values() for p in t["paths"])
    rc, out, _ = enface(lake, "vacuum", "--retention-hours", "0")
    assert rc == 0 and out["deleted"] == listed["would_delete"]
    assert data_files_on_disk(Path(lake.uri)) == sum(lake.data_files(name) for name in TABLES)
    assert rows(Lake(lake.uri)) == before
    rc, report, _ = enface(lake, "check")
    assert rc == 0 and report["ok"]


@pytest.mark.usefixtures("prefect_server")
def test_scan_flow_compacts_every_n_runs(tmp_path, test_data, env):
    from enface_batch.flows.scan import run_scan

    env("ENFACE_OPTIMIZE_EVERY", 3)
    photos = sorted((test_data / "lfw_dev" / "images").rglob("*.jpg"))[:3]
    folder = tmp_path / "photos"
    folder.mkdir()
    lake = Lake(tmp_path / "lake")
    make_source(lake, folder)
    for i, photo in enumerate(photos):
        shutil.copy(photo, folder / photo.name)
        run_scan(lake=lake.uri, workers=1)
        if i < 2:  # not due yet: one file per run's commit
            assert lake.data_files("images") == i + 1
    assert lake.data_files("images") == 1 and lake.read("images").num_rows == 3
    assert lake.table("images").metadata().configuration["delta.deletedFileRetentionDuration"] == "interval 7 days"


def test_a_reader_pinned_before_optimize_and_vacuum_reads_on(lake):
    """On a local and an S3 lake: the endpoint's snapshot, pinned before compaction, still reads its version
    after optimize and a default vacuum (the replaced files stay for the retention); a new snapshot reads the
    compacted files; the rows are the same."""
    from enface_batch.lake import upkeep
    from enface_batch.lake.reader import LakeReader
    from enface_batch.lake.store import now

    for i in range(6):
        lake.upsert("person_lists", [{"list_id": f"list-{i}", "name": f"n{i}", "created": now()}], keys=["list_id"])
    lake.upsert("person_lists", [{"list_id": "list-0", "name": "renamed", "created": now()}], keys=["list_id"])
    reader = LakeReader(lake)
    pinned = reader.snapshot()
    before = sorted(pinned.read("person_lists", columns=["list_id", "name"]).to_pylist(), key=str)
    old_files = pinned.files("person_lists")
    with lake.writer_lock("test"):
        out = upkeep.optimize(lake)
        assert out["tables"]["person_lists"]["files_after"] == 1 < len(old_files)
        assert upkeep.vacuum(lake)["deleted"] == 0  # all replaced files are younger than 7 days
    cache = reader.table("person_lists")
    cache.files.clear()  # the pinned version's files are read again from the store, not from memory
    cache.combined.clear()
    assert sorted(pinned.read("person_lists", columns=["list_id", "name"]).to_pylist(), key=str) == before
    fresh = reader.snapshot()
    assert len(fresh.files("person_lists")) == 1
    assert sorted(fresh.read("person_lists", columns=["list_id", "name"]).to_pylist(), key=str) == before


@pytest.mark.usefixtures("prefect_server")
def test_a_failed_upkeep_leaves_the_scan_completed_and_is_tried_again(tmp_path, test_data, env, monkeypatch):
    from enface_batch.flows import scan as scan_flow
    from enface_batch.lake import upkeep

    env("ENFACE_OPTIMIZE_EVERY", 1)
    monkeypatch.setattr(scan_flow, "upkeep_task", scan_flow.upkeep_task.with_options(retries=0))
    real = upkeep.optimize
    monkeypatch.setattr(upkeep, "optimize", lambda lake: (_ for _ in ()).throw(ConnectionResetError("store down")))
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(test_data / "lfw_dev" / "images" / "Eric_Daze" / "Eric_Daze_0001.jpg", folder / "a.jpg")
    lake = Lake(tmp_path / "lake")
    make_source(lake, folder)
    (summary,) = scan_flow.run_scan(lake=lake.uri, workers=1)  # the scan's result, not the upkeep's error
    assert summary["images_new"] == 1
    state = json.loads((Path(lake.uri) / "_upkeep" / "state.json").read_text())
    assert state["runs_since"] == 1 and "last" not in state  # not reset: the next scan tries again
    monkeypatch.setattr(upkeep, "optimize", real)
    shutil.copy(test_data / "lfw_dev" / "images" / "Tanya_Holyk" / "Tanya_Holyk_0001.jpg", folder / "b.jpg")
    scan_flow.run_scan(lake=lake.uri, workers=1)
    state = json.loads((Path(lake.uri) / "_upkeep" / "state.json").read_text())
    assert state["runs_since"] == 0 and state["last"] and lake.data_files("images") == 1
