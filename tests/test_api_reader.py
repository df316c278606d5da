"""The endpoint's lake reader and live indexes: pinned snapshots, new commits seen, incremental index updates
that always equal an index built from scratch (local folder and real S3)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from enface_batch.api.searcher import LiveIndexes
from enface_batch.index import PersonIndex
from enface_batch.lake.reader import LakeReader, ReadOnlyLake
from enface_batch.lake.schemas import DEFAULT_LIST_ID
from enface_batch.lake.store import now
from enface_batch.ops import catalog, persons
from enface_batch.ops.identity import face_row

DIM = 128


def _rows(n: int, list_id: str, rng: np.random.Generator, tag: str = "") -> list[dict]:
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    t = now()
    return [
        {
            "person_id": str(uuid.uuid4()),
            "list_id": list_id,
            "created": t,
            "updated": t,
            "status": "init",
            "fields": [f"{tag}{i}"],
            "features": "{}",
            "embedding": emb[i].tolist(),
            "thumb": b"\xff\xd8fake" if i % 2 else None,
            "model": "synthetic",
        }
        for i in range(n)
    ]


def _add(lake, rows: list[dict]) -> None:
    """Persons and their face rows, as every operation that creates persons writes them."""
    lake.append("persons", rows)
    lake.append(
        "person_faces",
        [
            face_row(
                person_id=r["person_id"],
                list_id=r["list_id"],
                embedding=r["embedding"],
                image_sha256=None,
                face_index=None,
                how="created",
            )
            for r in rows
        ],
    )


def _exact(lake, list_id: str, queries: np.ndarray, k: int) -> list[list[str]]:
    """Exact search over the persons' faces (one face each here, so a person's template is its face)."""
    rows = lake.read("person_faces", where={"list_id": list_id}, columns=["person_id", "embedding"])
    emb = np.asarray(rows["embedding"].to_pylist(), np.float32).reshape(-1, DIM)
    idx = PersonIndex.build(rows["person_id"].to_pylist(), emb, version=0, kind="flat")
    return [[p for p, _ in hits] for hits in idx.search(queries, k)]


def test_snapshot_reads_like_the_lake_and_stays_pinned(lake):
    rng = np.random.default_rng(1)
    vip = catalog.create_list(lake, "vip")["list_id"]
    lake.append("persons", _rows(5, vip, rng, "a"))
    reader = LakeReader(lake)
    snap = reader.snapshot()
    assert catalog.list_lists(snap) == catalog.list_lists(lake)
    assert catalog.list_groups(snap) == catalog.list_groups(lake)
    pid = lake.read("persons", columns=["person_id"])["person_id"][0].as_py()
    assert persons.get_person(snap, pid, vip) == persons.get_person(lake, pid, vip)
    before = snap.version("persons")
    # A merge rewrites files (string_view columns); the pinned snapshot does not move, a new one sees it.
    persons.update_person(lake, pid, list_id=vip, fields=["changed"])
    lake.append("persons", _rows(3, vip, rng, "b"))
    assert snap.version("persons") == before
    assert snap.read("persons", where={"list_id": vip}).num_rows == 5
    assert persons.get_person(snap, pid, vip)["fields"] != ["changed"]
    fresh = reader.snapshot()
    assert fresh.version("persons") == lake.version("persons")
    assert fresh.read("persons", where={"list_id": vip}, columns=["person_id"]).num_rows == 8
    assert persons.get_person(fresh, pid, vip)["fields"] == ["changed"]
    assert persons.get_person(fresh, pid, vip) == persons.get_person(lake, pid, vip)
    # heavy columns come from the pinned files too
    heavy = fresh.read("persons", where={"list_id": vip}, columns=["person_id", "thumb", "embedding"])
    assert heavy.num_rows == 8 and len(heavy["embedding"][0]) == DIM
    with pytest.raises(ReadOnlyLake):
        fresh.append("persons", [])


def test_live_indexes_follow_commits_exactly(lake):
    rng = np.random.default_rng(2)
    a = catalog.create_list(lake, "a")["list_id"]
    _add(lake, _rows(40, a, rng))
    _add(lake, _rows(30, DEFAULT_LIST_ID, rng))
    reader = LakeReader(lake)
    live = LiveIndexes(reader, DIM)
    q = rng.normal(size=(6, DIM)).astype(np.float32)

    def check():
        snap = reader.snapshot()
        for lid in (a, DEFAULT_LIST_ID):
            got = [[p for p, _, _ in hits] for hits in live.bind(snap).search([lid], q, 5)]
            assert got == _exact(lake, lid, q, 5)
        return snap

    old = check()
    _add(lake, _rows(7, a, rng))  # new files
    check()
    victim = old.read("persons", where={"list_id": a}, columns=["person_id"])["person_id"][3].as_py()
    persons.delete_person(lake, victim, list_id=a)  # rewrites a file
    check()
    row = lake.read("person_faces", where={"list_id": a}).to_pylist()[0]
    row["embedding"] = q[0].tolist()  # the replaced face is found at once
    lake.upsert("person_faces", [row], keys=["list_id", "face_id"])
    snap = check()
    assert live.bind(snap).search([a], q[:1], 1)[0][0][0] == row["person_id"]
    # an older snapshot, after the indexes moved on, still answers as of its own version
    got = {p for h in live.bind(old).search([a], q, 50) for p, _, _ in h}
    assert victim in got and row["person_id"] in got and len(got) <= 40
