"""The scan writer's batched search (one FAISS search per chunk, faces of a chunk resolved against each other)
leaves the same tables as searching face after face: same persons, same person of every face, same actions.

Input: synthetic analysed images with real SFace embedding statistics (bench/writer_ceiling.py's generator),
fed to ScanWriter as the scan flow feeds it; half the faces are persons of a pre-filled list, half newcomers
who come back later, often within the same chunk, so persons created by a face must be found by the next.
"""

from __future__ import annotations

import pytest

from bench.search_scale import Faces
from bench.writer_ceiling import make_images, run_writer, setup
from enface_batch.ops import action as action_mod


def _tables(lake) -> dict:
    persons = lake.read("persons", columns=["person_id", "image_sha256", "face_index"]).to_pylist()
    key = {p["person_id"]: (p["image_sha256"], p["face_index"]) for p in persons}
    faces = lake.read("person_faces", columns=["image_sha256", "face_index", "person_id", "how", "score"]).to_pylist()
    for f in faces:  # face ids hash the list id, which differs between the two lakes
        f["face"] = (f["image_sha256"], f["face_index"])
    actions = lake.read(
        "actions", columns=["image_sha256", "face_index", "decision", "matches", "persons_created"]
    ).to_pylist()
    return {
        "persons": sorted(key.values()),
        "faces": sorted((f["face"], key[f["person_id"]], f["how"]) for f in faces),
        "scores": {f["face"]: f["score"] for f in faces},
        "actions": sorted(
            (
                a["image_sha256"],
                a["face_index"],
                a["decision"],
                tuple(key[m["person_id"]] for m in a["matches"]),
                tuple(key[p] for p in a["persons_created"]),
            )
            for a in actions
        ),
        "match_scores": {(a["image_sha256"], a["face_index"]): [m["score"] for m in a["matches"]] for a in actions},
    }


@pytest.mark.parametrize("depth", [action_mod.CHUNK_DEPTH, 0])
def test_batched_writer_leaves_the_tables_of_the_face_after_face_writer(tmp_path, monkeypatch, depth):
    # depth 0: no spare candidates, so faces whose photo excludes a person fall back to a live search
    monkeypatch.setattr(action_mod, "CHUNK_DEPTH", depth)
    faces = Faces(3)
    out = {}
    for path in ("batched", "single"):
        lake, sid, centres = setup(tmp_path / path, 400, faces)
        images = make_images(faces, centres, 600, seed=5)
        r = run_writer(lake, sid, images, batched=path == "batched", profile=False)
        out[path] = (r, _tables(lake))
    (rb, tb), (rs, ts) = out["batched"], out["single"]
    assert rb["created"] > 50 and rb["matched"] > 300  # both kinds of decision are exercised
    assert (rb["faces"], rb["created"], rb["matched"]) == (rs["faces"], rs["created"], rs["matched"])
    assert (rb["fallbacks"] > 0) == (depth == 0)  # the exactness check sends faces to a live search when needed
    for name in ("persons", "faces", "actions"):
        assert tb[name] == ts[name], name
    for k, v in ts["scores"].items():  # scores agree to the rounding of float32 sums in two kernels
        assert v is None and tb["scores"][k] is None or abs(tb["scores"][k] - v) <= 0.011
    for k, v in ts["match_scores"].items():
        assert all(abs(a - b) <= 0.011 for a, b in zip(tb["match_scores"][k], v, strict=True))
