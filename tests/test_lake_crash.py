"""Writes are atomic: readers see whole snapshots while a writer works, and kill -9 leaves no half-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import polars as pl

from enface_batch.lake.store import Lake
from enface_batch.ops import persons
from enface_batch.ops.action import action

WRITER = textwrap.dedent(
    """
    import sys
    from enface_batch.analyze import Analyzer
    from enface_batch.lake.store import Lake
    from enface_batch.models import load_pack
    from enface_batch.ops import catalog, persons
    lake, an = Lake(sys.argv[1]), Analyzer(load_pack())
    print("ready", flush=True)
    for i in range(10_000):
        lst = catalog.create_list(lake, f"list {i}")["list_id"]
        persons.create_person(lake, an, sys.argv[2], list_id=lst, fields=[f"n{i}"], new_person_square_min=50)
    """
)


def _snapshot_ok(uri: str) -> tuple[int, int]:
    df = pl.read_delta(f"{uri}/persons")
    assert df["person_id"].n_unique() == df.height
    assert df["embedding"].list.len().unique().to_list() in ([], [128])
    assert df["fields"].list.len().unique().to_list() in ([], [1])
    lists = pl.read_delta(f"{uri}/person_lists")
    return df.height, lists.height


def test_readers_see_whole_snapshots_and_kill_9_loses_nothing_committed(tmp_path, test_data, analyzer):
    uri = str(tmp_path / "lake")
    Lake(uri)
    photo = str(test_data / "fixtures/face_recognition_examples/examples/obama_small.jpg")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri, photo], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    seen = []
    deadline = time.time() + 6
    while time.time() < deadline:
        seen.append(_snapshot_ok(uri))  # never a person without its list, never a torn row
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_persons, n_lists = _snapshot_ok(uri)
    assert n_persons >= 3, "the writer made progress before it was killed"
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)  # snapshots only move forward
    # each person sits in its own list, created before it: lists = persons or persons + 1 (killed in between)
    assert n_lists - 1 in (n_persons, n_persons + 1)
    # the lake keeps working: its indexes are rebuilt or reused, and every committed person is searchable
    lake = Lake(uri)
    rows = lake.read("persons").to_pylist()
    for row in rows[:3]:
        out = action(lake, analyzer, [photo], person_list_search=[row["list_id"]], new_person_threshold="never")
        assert out["results"][0]["faces"][0]["matches"][0]["person_id"] == row["person_id"]
    assert persons.get_person(lake, rows[-1]["person_id"], rows[-1]["list_id"])["fields"]
