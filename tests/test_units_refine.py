"""Dedup's refinement (ops/refine.py): single faces move to the person they fit best, or split off; faces a user
placed and the face a person was made from never move; two faces of one photo never meet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from enface_batch.lake.schemas import TABLES
from enface_batch.ops.identity import face_row
from enface_batch.ops.refine import plan_refinement, split_person_id
from enface_batch.scoring import DEFAULT_EMBEDDER, calibration_for

L = "list"
MIN = calibration_for(DEFAULT_EMBEDDER).similarity_for(90)


def _people(seed: int = 0):
    rng = np.random.default_rng(seed)
    centre = {k: rng.normal(size=128) for k in "abc"}

    def face(who: str, noise: float = 0.35) -> np.ndarray:
        v = centre[who] / np.linalg.norm(centre[who]) + noise * rng.normal(size=128) / np.sqrt(128)
        return v / np.linalg.norm(v)

    return face, rng


def _table(rows: list[tuple[str, np.ndarray, str, int, str]]) -> pa.Table:
    """rows: (person, embedding, photo sha, face index, how)"""
    out = [face_row(person_id=p, list_id=L, embedding=e, image_sha256=s, face_index=i, how=h) for p, e, s, i, h in rows]
    return pa.Table.from_pylist(out, TABLES["person_faces"])


def test_a_face_matched_to_the_wrong_person_moves_and_a_stray_splits():
    face, rng = _people()
    rows = [("A", face("a"), "a0", 0, "created"), ("B", face("b"), "b0", 0, "created")]
    rows += [("A", face("a"), f"a{i}", 0, "matched") for i in range(1, 5)]
    rows += [("B", face("b"), f"b{i}", 0, "matched") for i in range(1, 5)]
    rows += [("A", face("b"), "wrong", 0, "matched")]  # a B face the scan gave to A
    stray = rng.normal(size=128)
    rows += [("A", stray / np.linalg.norm(stray), "stray", 0, "matched")]  # nobody's
    t = _table(rows)
    origin = {"A": ("a0", 0), "B": ("b0", 0)}
    plan = plan_refinement(L, t, origin, min_similarity=MIN)
    fid = dict(zip(t["image_sha256"].to_pylist(), t["face_id"].to_pylist(), strict=True))
    assert plan.moved == {fid["wrong"]: "B"}
    assert plan.split == {fid["stray"]: split_person_id(L, fid["stray"])}


def test_placed_faces_and_origins_never_move_and_one_photo_never_joins():
    face, _ = _people(1)
    rows = [("A", face("a"), "a0", 0, "created"), ("B", face("b"), "b0", 0, "created")]
    rows += [("B", face("b"), f"b{i}", 0, "matched") for i in range(1, 4)]
    rows += [("A", face("b"), "enrolled-b", 0, "enrolled")]  # a user put it there: it stays
    rows += [("A", face("b"), "b1", 1, "matched")]  # B holds face 0 of photo b1: face 1 cannot join B
    rows += [("A", face("a"), "a1", 0, "matched")]
    t = _table(rows)
    plan = plan_refinement(L, t, {"A": ("a0", 0), "B": ("b0", 0)}, min_similarity=MIN)
    cols = (t[c].to_pylist() for c in ("image_sha256", "face_index", "face_id"))
    fid = {(s, i): f for s, i, f in zip(*cols, strict=True)}
    assert fid[("enrolled-b", 0)] not in plan.moved and fid[("enrolled-b", 0)] not in plan.split
    assert plan.moved.get(fid[("b1", 1)]) != "B"
    assert fid[("a0", 0)] not in plan.moved and fid[("a1", 0)] not in plan.moved
