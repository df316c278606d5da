"""Prefect as Prefect users run it: prefect.yaml deployed with `prefect deploy --all` to a process work pool
and executed by `prefect worker start`; and `enface enrol` / `dedup` / `reindex` recorded as flow runs with their
summary artifacts by the temporary server the command starts and stops, like `enface run`."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from enface_batch.lake.store import Lake
from enface_batch.ops import catalog

REPO = Path(__file__).resolve().parents[1]
EX = "fixtures/face_recognition_examples/examples"


def prefect(*args: str, env: dict) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p


@pytest.mark.usefixtures("prefect_server")
def test_prefect_yaml_deploys_the_scan_with_its_schedule_and_a_process_worker_runs_it(tmp_path, test_data):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(test_data / EX / name, photos / name)
    lake = Lake(tmp_path / "lake")
    people = catalog.create_list(lake, "people")["list_id"]
    group = catalog.create_group(lake, "archive", [people])["group_id"]
    catalog.create_source(
        lake, "photos", group, uri=str(photos), new_person_threshold="no_match", person_list_add=[people]
    )
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PWD": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO"}

    # The README's commands, as written there.
    prefect("work-pool", "create", "enface", "--type", "process", env=env)
    prefect("--no-prompt", "deploy", "--all", env=env)
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("scan/nightly-scan")
        assert dep.work_pool_name == "enface" and dep.entrypoint == "enface_batch.flows.scan:scan"
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == [("0 2 * * *", "UTC", True)]
        assert dep.parameters["sources"] is None and dep.parameters["chunk_size"] == 64
        assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1

    out = prefect("deployment", "run", "scan/nightly-scan", "--param", f"lake={lake.uri}", env=env).stdout
    run_id = out.split("UUID:")[1].split()[0]
    prefect("worker", "start", "--pool", "enface", "--run-once", env=env)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        assert run.state.is_completed(), run.state
        assert {a.key for a in client.read_artifacts() if a.flow_run_id == run.id} >= {"scan-summary"}
    assert lake.read("images").num_rows == 2 and lake.read("persons").num_rows == 2


def test_enrol_dedup_and_reindex_are_recorded_flow_runs_on_a_temporary_server(tmp_path, test_data):
    johns = test_data / "fixtures/dlib_examples/johns"
    tree = tmp_path / "people"
    for person in sorted(p for p in johns.iterdir() if p.is_dir())[:2]:
        (tree / person.name).mkdir(parents=True)
        for crop in sorted(person.iterdir())[:2]:
            shutil.copy(crop, tree / person.name / crop.name)
    lake = Lake(tmp_path / "lake")
    staff = catalog.create_list(lake, "staff")["list_id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")

    def enface(*args: str) -> dict:
        p = subprocess.run(
            [sys.executable, "-m", "enface_batch", *args, "--lake", lake.uri],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        assert "Error logging to API" not in p.stderr
        return json.loads(p.stdout)

    assert enface("enrol", str(tree), "--list-id", staff)["persons_created"] == 2
    assert enface("dedup", "--list-id", staff)["persons_after"] == 2
    assert enface("reindex", "--list-id", staff)["lists"][staff]["persons"] == 2
    # a mistyped list: the seed's 404 JSON on stdout, exit 4, and a failed run that says why
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "enface_batch",
            "dedup",
            "--list-id",
            "00000000-0000-4000-8000-000000000001",
            "--lake",
            lake.uri,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 4 and json.loads(p.stdout)["code"] == 404

    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        runs = db.execute(
            "select flow.name, flow_run.state_type from flow_run join flow on flow.id = flow_run.flow_id"
        ).fetchall()
        keys = {k for (k,) in db.execute("select key from artifact where key is not null")}
    assert sorted(runs) == [
        ("dedup", "COMPLETED"),
        ("dedup", "FAILED"),
        ("enrol", "COMPLETED"),
        ("reindex", "COMPLETED"),
    ]
    assert {"enrol-summary", "dedup-summary", "reindex-summary"} <= keys
