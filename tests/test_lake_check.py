"""Damaged Delta logs: errors that name the table and the file, no table recreated over data, `enface lake check`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enface_batch.lake.errors import LakeCorrupt
from enface_batch.lake.store import Lake
from enface_batch.ops import catalog


def _lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    for i in range(3):
        catalog.create_list(lake, f"list {i}")
    return lake


def _newest_commit(lake: Lake, table: str) -> Path:
    return sorted(Path(lake.uri, table, "_delta_log").glob("*.json"))[-1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-m", "enface_batch", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _check(lake: Lake) -> tuple[int, dict, str]:
    p = _cli("lake", "check", "--lake", lake.uri)
    return p.returncode, json.loads(p.stdout), p.stderr


def test_lake_check_passes_on_a_healthy_lake(tmp_path):
    lake = _lake(tmp_path)
    code, report, _ = _check(lake)
    assert code == 0 and report["ok"]
    assert {t["table"] for t in report["tables"] if t["ok"]} >= {"person_lists", "persons", "images", "actions"}


def test_truncated_commit_file_names_the_table_and_the_file(tmp_path):
    lake = _lake(tmp_path)
    commit = _newest_commit(lake, "person_lists")
    commit.write_bytes(commit.read_bytes()[: commit.stat().st_size // 2])
    with pytest.raises(LakeCorrupt) as info:
        Lake(lake.uri).read("person_lists")
    msg = str(info.value)
    assert "'person_lists'" in msg and str(commit) in msg and "truncated" in msg and "backup" in msg
    code, report, stderr = _check(lake)
    assert code == 1 and not report["ok"] and "person_lists" in stderr
    (bad,) = [t for t in report["tables"] if not t["ok"]]
    assert bad["table"] == "person_lists" and commit.name in " ".join(bad["problems"])
    p = _cli("list", "ls", "--lake", lake.uri)  # any command: a short error, not a 63-line traceback
    assert p.returncode == 7 and str(commit) in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) <= 6


def test_zero_byte_commit_file_is_an_error_not_an_empty_table(tmp_path):
    lake = _lake(tmp_path)
    commit = _newest_commit(lake, "person_lists")
    commit.write_bytes(b"")
    with pytest.raises(LakeCorrupt) as info:
        Lake(lake.uri)
    assert "'person_lists'" in str(info.value) and str(commit) in str(info.value) and "0 bytes" in str(info.value)
    code, report, _ = _check(lake)
    assert code == 1 and any("empty (0 bytes)" in p for t in report["tables"] for p in t["problems"])
    p = _cli("run", "--lake", lake.uri)  # exited 0 before, with the last commit's rows silently gone
    assert p.returncode == 7 and str(commit) in p.stderr


def test_deleted_delta_log_is_not_recreated_over_the_data(tmp_path):
    lake = _lake(tmp_path)
    before = sorted(p.name for p in Path(lake.uri, "person_lists").glob("*.parquet"))
    shutil.rmtree(Path(lake.uri, "person_lists", "_delta_log"))
    with pytest.raises(LakeCorrupt) as info:
        Lake(lake.uri)  # used to create an empty table: 4 lists -> 1
    assert "no _delta_log" in str(info.value) and "person_lists" in str(info.value)
    assert not Path(lake.uri, "person_lists", "_delta_log").exists()
    assert sorted(p.name for p in Path(lake.uri, "person_lists").glob("*.parquet")) == before
    code, report, _ = _check(lake)
    assert code == 1 and any("no _delta_log" in p for t in report["tables"] for p in t["problems"])


def test_lake_check_reports_a_missing_data_file(tmp_path):
    lake = _lake(tmp_path)
    victim = sorted(Path(lake.uri, "person_lists").glob("*.parquet"))[-1]
    victim.unlink()
    code, report, _ = _check(lake)
    (bad,) = [t for t in report["tables"] if not t["ok"]]
    assert code == 1 and bad["table"] == "person_lists"
    assert any(victim.name in p and "missing" in p for p in bad["problems"])
