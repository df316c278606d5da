"""The scan flow over a real folder tree: right counts in every table, idempotent re-runs, incremental adds,
S3 for archive and lake, a Dask cluster, and kill -9 in the middle of a scan."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from enface_batch.lake.schemas import TABLES
from enface_batch.lake.store import Lake
from enface_batch.ops import catalog

pytestmark = pytest.mark.usefixtures("prefect_server")

EX = "fixtures/face_recognition_examples/examples"


def build_archive(root: Path, data: Path) -> None:
    """Nested folders, a duplicate copy, a corrupt file, a non-image file, no-face scenes, a group photo."""
    ex, groups = data / EX, data / "fixtures/group_photos/compreface"
    (root / "2019/party").mkdir(parents=True)
    (root / "2020/trip/day1").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    shutil.copy(ex / "obama.jpg", root / "2019/obama.jpg")
    shutil.copy(ex / "obama2.jpg", root / "2019/obama2.jpg")
    shutil.copy(ex / "biden.jpg", root / "2019/party/biden.jpg")
    shutil.copy(ex / "two_people.jpg", root / "2019/party/two_people.jpg")
    shutil.copy(ex / "obama.jpg", root / "2020/obama copy.jpg")  # the same content under another name
    shutil.copy(ex / "alex-lacamoire.png", root / "2020/trip/alex.png")
    shutil.copy(groups / "011_3.jpg", root / "2020/trip/day1/group.jpg")
    shutil.copy(groups / "017_0.jpg", root / "2020/trip/day1/landscape.jpg")
    shutil.copy(data / "fixtures/no_faces/sun_nonface_scenes/114740.jpg", root / "2020/trip/scene.jpg")
    (root / "2020/trip/broken.jpg").write_bytes((ex / "biden.jpg").read_bytes()[:2000])
    (root / "2020/notes.txt").write_text("packing list")
    shutil.copy(ex / "obama.jpg", root / ".thumbnails/obama.jpg")  # hidden: never scanned


# Files: 11 (the hidden folder is skipped); distinct contents: 10 (one copy); errors: broken.jpg, notes.txt;
# no faces: landscape, scene. Faces: obama, obama2, biden, 2 in two_people, alex, 3 in the group = 9.
# People: Obama, Biden, Alex and the 3 people of the group photo = 6 persons.
EXPECTED = {"files": 11, "images": 10, "faces": 9, "actions": 9, "persons": 6}


def setup_source(lake: Lake, uri: str, **rules) -> str:
    """A source over `uri` whose scans create persons in a list "people" (rules: create_source's keywords)."""
    lst = catalog.create_list(lake, "people")["list_id"]
    group = catalog.create_group(lake, "archive", [lst])["group_id"]
    rules = {"new_person_angle_max": 40, "feature_check": ["gender", "age"], **rules}
    return catalog.create_source(
        lake,
        "photos",
        group,
        uri=uri,
        new_person_threshold="no_match",
        new_person_square_min=50,
        person_list_add=[lst],
        **rules,
    )["source_id"]


def counts(lake: Lake) -> dict:
    return {t: lake.read(t).num_rows for t in EXPECTED}


def content(lake: Lake) -> dict:
    """Tables without ids, run ids and times: what two runs over the same archive must agree on."""
    images = sorted(
        (Path(r["uri"]).name, r["status"], r["reason"], r["faces"]) for r in lake.read("images").to_pylist()
    )
    faces = sorted(
        (r["image_sha256"], r["face_index"], tuple(round(v) for v in r["bbox"])) for r in lake.read("faces").to_pylist()
    )
    actions = sorted((r["image_sha256"], r["face_index"], r["decision"]) for r in lake.read("actions").to_pylist())
    persons = sorted((r["image_sha256"], r["face_index"]) for r in lake.read("persons").to_pylist())
    files = sorted((Path(r["uri"]).name, r["sha256"]) for r in lake.read("files").to_pylist())
    return {"images": images, "faces": faces, "actions": actions, "persons": persons, "files": files}


def test_scan_counts_rerun_and_incremental_add(tmp_path, test_data):
    from enface_batch.flows.scan import run_scan

    build_archive(tmp_path / "archive", test_data)
    lake = Lake(tmp_path / "lake")
    setup_source(lake, str(tmp_path / "archive"))
    (summary,) = run_scan(lake=lake.uri, runner="threads", workers=2, chunk_size=4)
    assert counts(lake) == EXPECTED
    assert summary["files_seen"] == 11 and summary["duplicates"] == 1 and summary["images_failed"] == 2
    assert summary["images_no_faces"] == 2 and summary["persons_created"] == 6
    status = {Path(r["uri"]).name: (r["status"], r["reason"]) for r in lake.read("images").to_pylist()}
    assert status["broken.jpg"] == ("error", "truncated") and status["notes.txt"] == ("error", "not_an_image")
    assert status["landscape.jpg"][0] == status["scene.jpg"][0] == "no_faces"
    # both files of the copied photo are recorded against one analysed content
    files = {Path(r["uri"]).name: r["sha256"] for r in lake.read("files").to_pylist()}
    assert files["obama.jpg"] == files["obama copy.jpg"]
    # obama2 and the Obama of two_people matched the person created from obama.jpg
    acts = lake.read("actions").to_pylist()
    assert sum(a["decision"] == "matched" for a in acts) == 3

    # a second run changes nothing, not even a table version
    before = {t: lake.version(t) for t in TABLES}
    (again,) = run_scan(lake=lake.uri, runner="threads", workers=2)
    assert again["images_new"] == 0 and again["files_unchanged"] == 11
    assert {t: lake.version(t) for t in TABLES} == before

    # added files: only they are analysed; a renamed copy is not analysed again, an edited file is
    shutil.copy(test_data / EX / "lin-manuel-miranda.png", tmp_path / "archive/2020/lin.png")
    shutil.copy(test_data / EX / "biden.jpg", tmp_path / "archive/2020/biden renamed.jpg")
    (third,) = run_scan(lake=lake.uri, runner="threads", workers=2)
    assert third["images_new"] == 1 and third["duplicates"] == 1 and third["persons_created"] == 1
    assert counts(lake) == {"files": 13, "images": 11, "faces": 10, "actions": 10, "persons": 7}

    # an edited file: analysed again, and its one files row now names the new content (replaced, not added)
    shutil.copy(test_data / EX / "lin-manuel-miranda.png", tmp_path / "archive/2020/notes.txt")
    (fourth,) = run_scan(lake=lake.uri, runner="threads", workers=2)
    assert fourth["images_new"] == 0 and fourth["duplicates"] == 1  # its content is lin.png's, known
    files = [r for r in lake.read("files").to_pylist() if r["uri"].endswith("notes.txt")]
    assert (
        len(files) == 1
        and files[0]["sha256"] == {Path(r["uri"]).name: r["sha256"] for r in lake.read("files").to_pylist()}["lin.png"]
    )
    assert lake.read("files").num_rows == 13


def test_scan_with_archive_and_lake_on_s3(tmp_path, test_data, s3_endpoint):
    import s3fs

    from enface_batch.flows.scan import run_scan

    build_archive(tmp_path / "archive", test_data)
    prefix = f"enface/{uuid.uuid4().hex}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.put(str(tmp_path / "archive") + "/", f"{prefix}/archive/", recursive=True)
    lake = Lake(f"s3://{prefix}/lake")
    setup_source(lake, f"s3://{prefix}/archive")
    run_scan(lake=lake.uri, runner="threads", workers=2)
    assert counts(lake) == EXPECTED
    before = {t: lake.version(t) for t in TABLES}
    (again,) = run_scan(lake=lake.uri, runner="threads", workers=2)
    assert again["images_new"] == 0 and {t: lake.version(t) for t in TABLES} == before


def test_dask_cluster_gives_the_same_tables_as_a_local_run(tmp_path, test_data):
    distributed = pytest.importorskip("distributed", reason="the dask extra is needed")

    from enface_batch.flows.scan import run_scan

    build_archive(tmp_path / "archive", test_data)
    local, remote = Lake(tmp_path / "local"), Lake(tmp_path / "dask")
    for lk in (local, remote):
        setup_source(lk, str(tmp_path / "archive"))
    run_scan(lake=local.uri, runner="threads", workers=2, chunk_size=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        run_scan(lake=remote.uri, runner="dask", dask_address=cl.scheduler_address, workers=2, chunk_size=3)
    assert content(remote) == content(local)


def test_kill_9_mid_scan_then_rerun_gives_the_tables_of_an_uninterrupted_run(tmp_path, test_data):
    from enface_batch.flows.scan import run_scan

    build_archive(tmp_path / "archive", test_data)
    reference, crashed = Lake(tmp_path / "reference"), Lake(tmp_path / "crashed")
    for lk in (reference, crashed):
        setup_source(lk, str(tmp_path / "archive"))
    run_scan(lake=reference.uri, runner="threads", workers=1, chunk_size=2)

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    code = (
        "import sys; from enface_batch.flows.scan import run_scan; "
        "run_scan(lake=sys.argv[1], runner='threads', workers=1, chunk_size=2, commit_images=2)"
    )
    # A session of its own, so the kill also takes the temporary Prefect server the run starts.
    proc = subprocess.Popen(
        [sys.executable, "-c", code, crashed.uri],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    start = crashed.version("faces")
    deadline = time.time() + 240
    while crashed.version("faces") == start and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # right after the first commit's faces, before its images marker
    proc.wait()
    assert crashed.read("images").num_rows < EXPECTED["images"], "the run was killed before it finished"
    run_scan(lake=crashed.uri, runner="threads", workers=1, chunk_size=2)
    assert counts(crashed) == EXPECTED
    assert content(crashed) == content(reference)


def _prefect_servers(home: Path) -> set[int]:
    """Prefect servers running with this PREFECT_HOME (other test runs on the machine have their own)."""
    import psutil

    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if "prefect.server.api.server:create_app" not in " ".join(p.info["cmdline"] or []):
            continue
        try:
            if p.environ().get("PREFECT_HOME") == str(home):
                found.add(p.info["pid"])
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return found


def test_enface_run_without_a_prefect_server_starts_one_records_the_run_and_stops_it(tmp_path, test_data):
    import sqlite3

    build_archive(tmp_path / "archive", test_data)
    lake = Lake(tmp_path / "lake")
    setup_source(lake, str(tmp_path / "archive"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    p = subprocess.run(
        [sys.executable, "-m", "enface_batch", "run", "--lake", str(lake.uri)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert counts(lake) == EXPECTED
    assert not _prefect_servers(tmp_path / "prefect-home"), "the temporary Prefect server outlived the command"
    assert "Error logging to API" not in p.stderr  # Prefect flushed its logs before the server went away
    # The run is in the Prefect database of PREFECT_HOME, for `prefect server start` to show later.
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        assert db.execute("select state_type from flow_run where name is not null").fetchall() == [("COMPLETED",)]


def test_chunks_analysed_while_prefect_starts_give_the_same_tables(tmp_path, test_data, monkeypatch, analyzer):
    """`enface run` analyses the first chunks before the Prefect API answers (flows/head_start.py): a scan whose
    every chunk was analysed ahead writes the same tables as one whose tasks analysed them, and each chunk is
    handed over once."""
    from enface_batch.flows import scan as scan_flow
    from enface_batch.flows.head_start import HeadStart
    from enface_batch.scan import analyze_chunk, chunks, plan

    build_archive(tmp_path / "archive", test_data)
    ahead_lake, plain_lake = Lake(tmp_path / "ahead"), Lake(tmp_path / "plain")
    sid = setup_source(ahead_lake, str(tmp_path / "archive"))
    setup_source(plain_lake, str(tmp_path / "archive"))

    head = HeadStart(analyzer, ahead_lake.uri, None, chunk_size=4).start()
    head.wait(300)
    todo = list(chunks(plan(ahead_lake, sid), 4))
    assert head.done == len(todo) == 3
    first = head.take(todo[0], ["gender", "age"])
    again = analyze_chunk(analyzer, todo[0], ["gender", "age"])
    assert [(r.uri, r.status, len(r.faces)) for r in first] == [(r.uri, r.status, len(r.faces)) for r in again]
    for a, b in zip(first, again, strict=True):
        for fa, fb in zip(a.faces, b.faces, strict=True):
            assert float(fa.embedding @ fb.embedding) > 0.9999 and fa.features["gender"] == fb.features["gender"]
    assert head.take(todo[0], ["gender", "age"]) is None  # given once
    assert head.take(todo[1], []) is None  # other features: the task analyses the chunk itself

    taken = []

    class AllAhead(HeadStart):
        def start(self):
            super().start().wait(300)  # every chunk is ready before the flow starts
            return self

        def take(self, uris, features):
            got = super().take(uris, features)
            taken.append(got is not None)
            return got

    monkeypatch.setattr(scan_flow, "HeadStart", AllAhead)
    (summary,) = scan_flow.run_scan(lake=ahead_lake.uri, runner="threads", workers=2, chunk_size=4)
    assert taken == [True, True, True]
    scan_flow.run_scan(lake=plain_lake.uri, runner="threads", workers=2, chunk_size=4, head_start=False)
    assert counts(ahead_lake) == counts(plain_lake) == EXPECTED
    assert content(ahead_lake) == content(plain_lake)
    assert summary["persons_created"] == 6 and scan_flow._HEAD is None
