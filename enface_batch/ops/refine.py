"""Refining who is who after a scan: every matched face goes to the person it fits best, now that all the faces
are known.

A scan decides each face when it arrives, against the templates of that moment; dedup then merges whole
persons. Neither revisits a single face. This step does, after dedup's merges, in two passes:

* a face whose template score against another person beats its score against its own person (its own
  template computed *without* it, so a face does not vote for itself) and reaches the threshold moves there;
* a face that no longer reaches the threshold against its own person (without it) is split off as a person
  of its own: the scan let it in against an early template it no longer resembles.

Only faces a scan matched (`how` = matched, or merged in from another person) move. The face a person was
made from, and enrolled or replaced faces (a user's deliberate choice), never do, so no person is left
without faces. Two faces of one photo never end up in one person (cannot-link).

Measured in a simulation over lfw_dev's own embeddings in listing order, threshold 90 (`bench/identity_eval.py`
measures it through the CLI): BCubed F 0.968 -> 0.974 (P 0.948 -> 0.959); moving without splitting gains
only 0.001-0.003.

Writes, in an order a crash between them cannot hurt: persons rows for the split faces first (ids are uuid5
of the face, so a re-run upserts the same rows), then the moved face rows (one MERGE, keyed by face id).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..index import PersonIndex
from ..lake.store import Lake, now
from .identity import HOW_MOVABLE, template_vectors, unit_rows

NAMESPACE = uuid.UUID("8d2c0a57-3b9e-4f0e-a1c4-6e5b7d9f2a13")
PASSES = 2
_CANDIDATES = 8  # nearest templates asked per face; the best other person is almost always the first


@dataclass
class Refined:
    moved: dict[str, str]  # face_id -> new person_id
    split: dict[str, str]  # face_id -> person_id of the person it now makes


def split_person_id(list_id: str, face_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"split|{list_id}|{face_id}"))


def plan_refinement(
    list_id: str,
    faces: pa.Table,
    origin: dict[str, tuple[str | None, int | None]],
    *,
    min_similarity: float,
    passes: int = PASSES,
) -> Refined:
    """Which faces move or split (module doc). ``faces``: the list's person_faces rows (face_id, person_id,
    embedding, image_sha256, face_index, how); ``origin``: person -> (sha, index) of the face it was made from."""
    n = faces.num_rows
    if not n:
        return Refined({}, {})
    dim = len(faces["embedding"][0].as_py())
    emb = unit_rows(faces["embedding"], dim).astype(np.float64)
    fids = faces["face_id"].to_pylist()
    owner = faces["person_id"].to_pylist()
    shas, idxs, hows = (faces[c].to_pylist() for c in ("image_sha256", "face_index", "how"))
    movable = [i for i in range(n) if hows[i] in HOW_MOVABLE and origin.get(owner[i]) != (shas[i], idxs[i]) and shas[i]]
    start = list(owner)
    for _ in range(passes):
        people = sorted(set(owner))
        pos = {p: k for k, p in enumerate(people)}
        sums = np.zeros((len(people), dim))
        counts = np.zeros(len(people), np.int64)
        photos: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        for i, p in enumerate(owner):
            k = pos[p]
            sums[k] += emb[i]
            counts[k] += 1
            if shas[i]:
                photos[k][shas[i]].add(idxs[i])
        index = PersonIndex.build(people, template_vectors(sums, counts), version=0, kind="flat", normalise=False)
        hits = index.search(emb[movable].astype(np.float32), _CANDIDATES) if movable else []
        changed = False
        new_owner = list(owner)
        for i, found in zip(movable, hits, strict=True):
            k = pos[owner[i]]
            if counts[k] < 2:
                continue  # alone (split earlier): it is its person
            rest = (sums[k] - emb[i]) / (counts[k] - 1)
            own = float(rest @ emb[i]) / np.sqrt(max(float(np.linalg.norm(rest)), 1e-12))
            best = next(
                ((p, s) for p, s in found if p != owner[i] and not (photos[pos[p]].get(shas[i], set()) - {idxs[i]})),
                None,
            )
            if best and best[1] >= min_similarity and best[1] > own:
                new_owner[i] = best[0]
            elif own < min_similarity:
                new_owner[i] = split_person_id(list_id, fids[i])
            else:
                continue
            changed = True
        owner = new_owner
        if not changed:
            break
    moved, split = {}, {}
    for i in range(n):
        if owner[i] != start[i]:
            if owner[i] == split_person_id(list_id, fids[i]):
                split[fids[i]] = owner[i]
            else:
                moved[fids[i]] = owner[i]
    return Refined(moved, split)


def refine(lake: Lake, list_id: str, *, min_similarity: float, dry_run: bool = False) -> dict:
    """Plan and (unless dry_run) write the refinement of one list (module doc)."""
    persons = lake.read("persons", where={"list_id": list_id}).to_pylist()
    origin = {p["person_id"]: (p["image_sha256"], p["face_index"]) for p in persons}
    faces = lake.read("person_faces", where={"list_id": list_id})
    if faces.num_rows:
        alive = pa.array([p in origin for p in faces["person_id"].to_pylist()], pa.bool_())
        faces = faces.filter(alive)
    plan = plan_refinement(list_id, faces, origin, min_similarity=min_similarity)
    if plan.moved or plan.split:
        if not dry_run:
            _write(lake, faces, persons, plan)
    return {"faces_moved": len(plan.moved), "faces_split": len(plan.split)}


def _write(lake: Lake, faces: pa.Table, persons: list[dict], plan: Refined) -> None:
    t = now()
    by_id = {p["person_id"]: p for p in persons}
    rows = {r["face_id"]: r for r in faces.to_pylist() if r["face_id"] in plan.moved or r["face_id"] in plan.split}
    new_persons = []
    for fid, pid in sorted(plan.split.items()):
        r, was = rows[fid], by_id[rows[fid]["person_id"]]
        new_persons.append(
            {
                **{k: None for k in was},
                "person_id": pid,
                "list_id": r["list_id"],
                "created": t,
                "updated": t,
                "source_id": r["source_id"],
                "group_id": was["group_id"],
                "status": "init",
                "fields": [],
                "features": "{}",
                "embedding": r["embedding"],
                "image": r["thumb"],
                "thumb": r["thumb"],
                "image_uri": r["image_uri"],
                "image_sha256": r["image_sha256"],
                "face_index": r["face_index"],
                "action_id": r["action_id"],
                "model": was["model"],
            }
        )
    if new_persons:
        lake.upsert("persons", new_persons, keys=["person_id", "list_id"])
    out = []
    for fid, r in sorted(rows.items()):
        to = plan.split.get(fid) or plan.moved[fid]
        how = "created" if fid in plan.split else "moved"
        out.append({**r, "person_id": to, "from_person_id": r["person_id"], "how": how, "score": None, "added": t})
    lake.upsert("person_faces", out, keys=["list_id", "face_id"])
