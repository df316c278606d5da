"""The scan writer's fast paths give what the plain ones give: a lake writing through its kept-open tables
keeps every row and reports each commit's version, face ids and bulk ids are the UUIDs uuid makes, and the
scalar score is np.interp's to the last bit."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa

from enface_batch.lake.schemas import TABLES
from enface_batch.lake.store import Lake, now
from enface_batch.ops.identity import NAMESPACE, FaceIdSet, face_id, new_ids
from enface_batch.scoring import DEFAULT_EMBEDDER, calibration_for


def _rows(n: int, rng: np.random.Generator) -> dict[str, list[dict]]:
    t, run, rules = now(), str(uuid.uuid4()), '{"rules": 1}'
    faces, actions, person_faces = [], [], []
    for i in range(n):
        emb = rng.random(128, dtype=np.float32)
        faces.append(
            {
                "image_sha256": f"{i // 2:064x}",
                "uri": f"/a/{i // 2}.jpg",
                "source_id": "s",
                "face_index": i % 2,
                "bbox": [1.0, 2.0, 3.0, 4.0 + i],
                "landmarks": [[1.0, 2.0]] * 5,
                "square": float(i),
                "embedding": emb,
                "gender": None if i % 3 else "female",
                "run_id": run,
                "model": "m",
                "unknown_key": 1,  # not a column: ignored, as from_pylist ignores it
            }
        )
        actions.append(
            {
                "action_id": str(uuid.uuid4()),
                "run_id": run,
                "created": t,
                "image_sha256": f"{i // 2:064x}",
                "matches": [{"person_id": "p", "list_id": "l", "score": 90.5}] if i % 2 else [],
                "persons_created": [],
                "decision": "matched",
                "rules": rules,
                "spent_ms": 0.5,
            }
        )
        person_faces.append(
            {
                "person_id": "p",
                "face_id": face_id("l", f"{i:064x}", 0),
                "embedding": emb if i % 5 else emb.tolist(),  # a list among arrays: the general path
                "added": now(),
                "thumb": None,
                "score": None if i % 2 else 91.0,
            }
        )
    return {"faces": faces, "actions": actions, "person_faces": person_faces}


def test_a_lake_writing_through_kept_open_tables_keeps_rows_and_sees_other_writers(tmp_path):
    rng = np.random.default_rng(0)
    lake = Lake(str(tmp_path / "lake"))
    rows = _rows(30, rng)["faces"]
    v0 = lake.version("faces")
    assert lake.append("faces", rows[:10]) == v0 + 1
    assert lake.append("faces", rows[10:]) == v0 + 2 == lake.version("faces")
    back = lake.read("faces").sort_by([("image_sha256", "ascending"), ("face_index", "ascending")])
    assert back.equals(pa.Table.from_pylist(rows, TABLES["faces"]))
    other = Lake(str(tmp_path / "lake"))  # another writer (another process, in turn) commits meanwhile
    assert other.append("faces", _rows(3, rng)["faces"]) == v0 + 3
    assert lake.append("faces", _rows(2, rng)["faces"]) == v0 + 4  # the kept table catches up before writing
    assert lake.read("faces").num_rows == 35
    assert lake.delete("faces", {"face_index": 1}) == v0 + 5 == other.version("faces")
    assert lake.read("faces").num_rows == 35 - 15 - 1 - 1  # every second row of each append has face_index 1


def test_face_ids_and_bulk_ids_are_the_uuids_uuid_makes():
    for i in range(200):
        name = f"list|{i:064x}|{i % 4}"
        assert face_id("list", f"{i:064x}", i % 4) == str(uuid.uuid5(NAMESPACE, name))
    ids = new_ids(500)
    assert len(set(ids)) == 500
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 4 and u.variant == uuid.RFC_4122


def test_scalar_score_is_np_interp_to_the_last_bit():
    cal = calibration_for(DEFAULT_EMBEDDER)
    x = np.concatenate([np.random.default_rng(1).uniform(-1.1, 1.1, 20_000), cal.sim, np.nextafter(cal.sim, 2)])
    for v in x.astype(np.float32).tolist():
        assert cal.score_one(v) == cal.score(v)


def test_known_face_ids_answer_as_a_set_of_the_same_strings_would():
    """The writer's "this face already has its person" set, packed 16 bytes an id: same answers as a set."""
    ids = [face_id(f"list-{i % 3}", f"sha{i}", i % 5) for i in range(500)] + new_ids(500)
    for column in (pa.array(ids), pa.chunked_array([pa.array(ids[:300]), pa.array(ids[300:])]).cast(pa.large_string())):
        known = FaceIdSet(column)
        assert known._sorted is not None and len(known) == len(ids)  # packed, not a set of strings
        assert all(f in known for f in ids)
        strangers = new_ids(200) + [face_id("list-9", "sha1", 1), ids[0].upper(), ids[1][:-1], "", "x" * 36, None]
        assert not any(f in known for f in strangers)
        known.add(strangers[0])
        assert strangers[0] in known and strangers[1] not in known

    # a lake whose person_faces holds ids of another shape still answers exactly (a plain set then)
    mixed = FaceIdSet(pa.array(["enrolled-by-hand", ids[0]]))
    assert "enrolled-by-hand" in mixed and ids[0] in mixed and ids[1] not in mixed


def test_known_face_ids_added_during_a_run_are_merged_into_the_packed_ids(monkeypatch):
    monkeypatch.setattr(FaceIdSet, "MERGE_AT", 4)
    ids = new_ids(10)
    known = FaceIdSet(pa.array(ids[:2]))
    for f in ids[2:]:
        known.add(f)
    assert len(known._set) < 4 and len(known) == 10
    assert all(f in known for f in ids) and new_ids(1)[0] not in known
