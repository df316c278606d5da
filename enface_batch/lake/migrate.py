"""Upgrading a lake made by an earlier release in place, one step per schema version.

Each step is one Delta commit per table it rewrites, so a crash leaves the table as before or as after, and
a step recognises its own "after" (a column it adds), so running it again does nothing. `Lake()` runs the
missing steps when it opens a lake for writing; readers (the endpoint) read older lakes as they are.

1 -> 2: `person_faces` becomes the face-to-person table. Schema 1 held only faces moved by dedup and extra
enrolment photos; schema 2 holds every face's person per list. The step adds the columns (score, how,
source_id, run_id, action_id) and back-fills: the face each person was made from (persons), and the faces
scans matched (actions: the best match when it reached the action's threshold, no_match for "never",
followed through the `merges` journal to the person that exists now; embeddings from `faces`).

2 -> 3: `faces` gains age_bin, race and race_score (schemas.FACE_COLUMNS_ADDED[3]). A metadata-only commit:
existing rows read null in them (their images were scanned before these columns existed; a rescan of a source
with feature_check fills them only for new or edited images), new rows carry them.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pyarrow as pa
from deltalake import write_deltalake

from .schemas import FACE_COLUMNS_ADDED, TABLES

if TYPE_CHECKING:
    from .store import Lake

log = logging.getLogger(__name__)


def pending(lake: Lake) -> list[str]:
    steps = []
    if "how" not in {f.name for f in lake.table("person_faces").schema().fields}:
        steps.append("1->2")
    if _missing_face_columns(lake):
        steps.append("2->3")
    return steps


def migrate(lake: Lake) -> list[str]:
    """Run the steps this lake lacks; returns their names."""
    done = []
    for step in pending(lake):
        if step == "1->2":
            n = _v1_to_v2(lake)
            log.warning("lake %s upgraded to schema 2: person_faces now holds %d face rows", lake.uri, n)
        elif step == "2->3":
            added = _v2_to_v3(lake)
            log.warning("lake %s upgraded to schema 3: faces gained %s (null for stored faces)", lake.uri, added)
        done.append(step)
    return done


def _v1_to_v2(lake: Lake) -> int:
    from ..ops.identity import face_id, face_row, own_face
    from ..scoring import DEFAULT_EMBEDDER, calibration_for

    no_match = calibration_for(DEFAULT_EMBEDDER).no_match  # what "never" searched at

    old = lake.table("person_faces").to_pyarrow_table().to_pylist()
    persons = lake.read(
        "persons",
        columns=[
            "person_id",
            "list_id",
            "source_id",
            "embedding",
            "image_sha256",
            "face_index",
            "image_uri",
            "thumb",
            "action_id",
        ],
    ).to_pylist()
    rows: dict[str, dict] = {}
    for p in persons:  # the creating faces first: they win over any other claim on the same face
        # schema 1 stored the run id in persons.action_id
        r = own_face(p, "created" if p["source_id"] else "enrolled", run_id=p["action_id"])
        rows.setdefault(r["face_id"], r)
    alive = {(p["person_id"], p["list_id"]) for p in persons}
    for r in old:
        if (r["person_id"], r["list_id"]) not in alive:
            continue
        fid = face_id(r["list_id"], r["image_sha256"], r["face_index"]) if r["image_sha256"] else r["face_id"]
        how = "merged" if r["from_person_id"] else "enrolled"
        rows.setdefault(fid, {**r, "face_id": fid, "score": None, "how": how, "source_id": None, "run_id": None})
        rows[fid].setdefault("action_id", None)
    moved: dict[str, str] = {}
    for m in lake.read("merges", columns=["kept_person_id", "merged_person_ids"]).to_pylist():
        for g in m["merged_person_ids"] or []:
            moved[g] = m["kept_person_id"]
    embeddings = {
        (f["image_sha256"], f["face_index"]): f["embedding"]
        for f in lake.read("faces", columns=["image_sha256", "face_index", "embedding"]).to_pylist()
    }
    cols = ["action_id", "run_id", "source_id", "image_sha256", "image_uri", "face_index", "matches", "rules"]
    for a in lake.read("actions", columns=cols).to_pylist():
        if not a["matches"]:
            continue
        best = a["matches"][0]
        threshold = json.loads(a["rules"] or "{}").get("threshold_score") or no_match
        emb = embeddings.get((a["image_sha256"], a["face_index"]))
        if best["score"] < threshold or emb is None:
            continue
        pid, seen = best["person_id"], set()
        while pid in moved and pid not in seen:
            seen.add(pid)
            pid = moved[pid]
        if (pid, best["list_id"]) not in alive:
            continue
        r = face_row(
            person_id=pid,
            list_id=best["list_id"],
            embedding=emb,
            image_sha256=a["image_sha256"],
            face_index=a["face_index"],
            how="matched",
            image_uri=a["image_uri"],
            score=best["score"],
            source_id=a["source_id"],
            run_id=a["run_id"],
            action_id=a["action_id"],
        )
        rows.setdefault(r["face_id"], r)
    table = pa.Table.from_pylist(list(rows.values()), TABLES["person_faces"])
    write_deltalake(
        lake.table_uri("person_faces"),
        table,
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=lake.options,
    )
    return table.num_rows


def _missing_face_columns(lake: Lake) -> list[str]:
    have = {f.name for f in lake.table("faces").schema().fields}
    return [c for c in FACE_COLUMNS_ADDED[3] if c not in have]


def _v2_to_v3(lake: Lake) -> list[str]:
    from deltalake.schema import Field

    missing = _missing_face_columns(lake)
    fields = [Field.from_arrow(TABLES["faces"].field(c)) for c in missing]
    lake.table("faces").alter.add_columns(fields)  # one commit; old files simply lack the columns (read as null)
    return missing
