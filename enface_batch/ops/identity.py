"""Who is in which photo: the `person_faces` rows (one per face and list) and the templates built from them.

A person is all its faces. Its template, what a new face is matched against, is the mean ``m`` of its faces'
unit embeddings, indexed as ``m / sqrt(|m|)``: the inner product of a unit query with it is
``cos(q, m) * sqrt(|m|)``, the geometric mean of the cosine to the template and the mean cosine to the
person's faces. Why that and not the plain template cosine: the mean of n faces has ``|m| < 1`` and its
normalised direction is closer to strangers too; on lfw_dev (3,811 photos, every stranger pair) the cosine to
a normalised template of 8 faces reaches the 1e-4 false-match rate at 0.456 instead of 0.418 for one face,
while ``cos * sqrt(|m|)`` stays at 0.41-0.42 for templates of 1 to 8 faces (`bench/template_calibration.py`).
So the face-pair calibration (the Enface % scores and what 80..95 promise) holds for templates unchanged,
and a person of one face scores exactly as before.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid

import numpy as np
import pyarrow as pa

from ..index import PersonIndex
from ..lake.protocols import ReadLake
from ..lake.store import now
from .shapes import iso

NAMESPACE = uuid.UUID("0f6b7d1e-7a43-4c38-9b6c-2f1e5d9a8c47")
_NAMESPACE_BYTES = NAMESPACE.bytes
HOW = ("created", "matched", "enrolled", "merged", "replaced", "moved")
HOW_MOVABLE = ("matched", "merged", "moved")  # what dedup's refinement may move: faces no user placed


def face_id(list_id: str, image_sha256: str | None, face_index: int | None) -> str:
    """The id of a face's row in a list: the same face (photo content and index) has one person per list."""
    if not image_sha256:
        return str(uuid.uuid4())
    # uuid.uuid5(NAMESPACE, name), without building a UUID object: a scan writer makes one per face and list.
    d = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{list_id}|{image_sha256}|{face_index}".encode()).digest()[:16])
    d[6] = (d[6] & 0x0F) | 0x50
    d[8] = (d[8] & 0x3F) | 0x80
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def _uuid_bytes(ids: pa.Array) -> np.ndarray | None:
    """Canonical UUID strings (36 characters, lower-case hex, hyphens at 8-13-18-23) as 16-byte values, or
    None when any id is not one (so equal bytes always mean equal strings)."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(ids)
    if n == 0:
        return np.zeros(0, "V16")
    if not pa.types.is_string(ids.type):  # large_string / string_view: the same text, other layout
        try:
            ids = ids.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    if ids.null_count:
        return None
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset : ids.offset + n + 1]
    if not (np.diff(offsets) == 36).all():
        return None
    chars = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0] : offsets[0] + 36 * n].reshape(n, 36)
    if not (chars[:, [8, 13, 18, 23]] == ord("-")).all():
        return None
    nib = _HEX[np.delete(chars, [8, 13, 18, 23], axis=1)]
    if (nib == 255).any():
        return None
    packed = (nib[:, 0::2] << 4) | nib[:, 1::2]
    return np.ascontiguousarray(packed).view("V16").reshape(n)


class FaceIdSet:
    """Face ids (of person_faces) to test membership against, compact: 16 bytes per id in a sorted array
    instead of a Python string in a set (1M ids: 16 MB against 119 MB, built in 0.26 against 0.42 s; a lookup
    costs ~3 us against ~0.2: bench/known_faces.py). Ids that are not canonical UUID strings (face_id makes
    none, but a lake may hold other writers' ids) make it fall back to a set. Ids added later sit in a small
    set until there are enough to merge."""

    MERGE_AT = 100_000

    def __init__(self, ids: pa.Array | pa.ChunkedArray) -> None:
        self._sorted = _uuid_bytes(ids)
        if self._sorted is not None:
            self._sorted = np.sort(self._sorted)
        self._set: set[str] = set(ids.to_pylist()) if self._sorted is None else set()

    def __len__(self) -> int:
        return len(self._set) + (0 if self._sorted is None else len(self._sorted))

    def __contains__(self, fid: object) -> bool:
        if fid in self._set:
            return True
        if self._sorted is None or not len(self._sorted) or not isinstance(fid, str):
            return False
        # one id at a time (a writer asks per face and list): a few microseconds, no Arrow round trip
        if len(fid) != 36 or fid.lower() != fid or fid[8] + fid[13] + fid[18] + fid[23] != "----":
            return False  # not canonical: never among the packed ids
        try:
            key = np.frombuffer(bytes.fromhex(fid.replace("-", "")), "V16")[0]
        except ValueError:
            return False
        i = int(np.searchsorted(self._sorted, key))
        return i < len(self._sorted) and self._sorted[i] == key

    def add(self, fid: str) -> None:
        self._set.add(fid)
        if self._sorted is not None and len(self._set) >= self.MERGE_AT:
            packed = _uuid_bytes(pa.array(sorted(self._set), pa.string()))
            if packed is not None:  # otherwise they stay in the set
                self._sorted = np.sort(np.concatenate([self._sorted, packed]))
                self._set.clear()


def new_ids(n: int) -> list[str]:
    """n random (version 4) UUID strings at once: ~1.4 us each against ~5 us for str(uuid.uuid4())."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def face_row(
    *,
    person_id: str,
    list_id: str,
    embedding: np.ndarray | list[float],
    image_sha256: str | None,
    face_index: int | None,
    how: str,
    image_uri: str | None = None,
    thumb: bytes | None = None,
    score: float | None = None,
    source_id: str | None = None,
    run_id: str | None = None,
    action_id: str | None = None,
    from_person_id: str | None = None,
    known_face_id: str | None = None,
) -> dict:
    """known_face_id: the row's face_id when the caller computed it already (it is face_id(list, photo, index))."""
    if how not in HOW:
        raise ValueError(f"how must be one of {HOW}, got {how!r}")
    return {
        "person_id": person_id,
        "list_id": list_id,
        "face_id": known_face_id or face_id(list_id, image_sha256, face_index),
        # An array, not a list: Arrow converts it ~8x faster than 128 Python floats (bench/writer_ceiling.py).
        "embedding": np.asarray(embedding, np.float32),
        "image_sha256": image_sha256 or None,
        "image_uri": image_uri,
        "face_index": face_index,
        "thumb": thumb,
        "from_person_id": from_person_id,
        "added": now(),
        "score": score,
        "how": how,
        "source_id": source_id,
        "run_id": run_id,
        "action_id": action_id,
    }


def own_face(person: dict, how: str, **extra) -> dict:
    """The face row of the face a persons row was made from (its embedding, photo, thumb and source)."""
    return face_row(
        person_id=person["person_id"],
        list_id=person["list_id"],
        embedding=person["embedding"],
        image_sha256=person["image_sha256"],
        face_index=person["face_index"],
        how=how,
        image_uri=person["image_uri"],
        thumb=person["thumb"],
        source_id=person.get("source_id"),
        **extra,
    )


def template_vectors(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Index vectors ``m / sqrt(|m|)`` from per-person sums of unit embeddings and their counts (module doc)."""
    m = np.asarray(sums, np.float64) / np.maximum(np.asarray(counts, np.float64), 1)[:, None]
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.sqrt(np.maximum(norm, 1e-12))).astype(np.float32)


def unit_rows(col: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A list<float> column of embeddings as an (n, dim) matrix of unit rows."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not len(arr):
        return np.zeros((0, dim), np.float32)
    mat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.maximum(norms, 1e-12)


def person_sums(
    lake: ReadLake, list_id: str, dim: int, *, version: int | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per person of a list: (person ids, sums of unit face embeddings, face counts), from `person_faces`.

    Persons without a face row (a crash between the two commits of person create) keep their own embedding,
    so a person in the persons table is always searchable.
    """
    persons = lake.read("persons", where={"list_id": list_id}, columns=["person_id", "embedding"])
    faces = lake.read("person_faces", where={"list_id": list_id}, columns=["person_id", "embedding"], version=version)
    ids = persons["person_id"].to_pylist()
    pos = {p: i for i, p in enumerate(ids)}
    sums = np.zeros((len(ids), dim), np.float64)
    counts = np.zeros(len(ids), np.int64)
    if faces.num_rows:
        owner = np.array([pos.get(p, -1) for p in faces["person_id"].to_pylist()], np.int64)
        known = owner >= 0  # rows of a person deleted under a crash are not searchable
        emb = unit_rows(faces["embedding"], dim)
        np.add.at(sums, owner[known], emb[known])
        np.add.at(counts, owner[known], 1)
    alone = np.flatnonzero(counts == 0)
    if len(alone):
        sums[alone] = unit_rows(persons["embedding"], dim)[alone]
        counts[alone] = 1
    return ids, sums, counts


def photos_of(lake: ReadLake, person_id: str, list_id: str) -> list[dict]:
    """Every photo a person is in: its faces with the paths the photo was seen at (files) and how each came."""
    cols = ["face_id", "image_sha256", "face_index", "image_uri", "score", "how", "source_id", "added"]
    faces = lake.read("person_faces", where={"person_id": person_id, "list_id": list_id}, columns=cols).to_pylist()
    shas = sorted({f["image_sha256"] for f in faces if f["image_sha256"]})
    paths: dict[str, list[str]] = {}
    if shas:
        files = lake.read("files", where={"sha256": shas}, columns=["uri", "sha256"])
        for uri, sha in zip(files["uri"].to_pylist(), files["sha256"].to_pylist(), strict=True):
            paths.setdefault(sha, []).append(uri)
    out = []
    for f in sorted(faces, key=lambda f: (f["added"], f["face_id"])):
        seen = sorted(paths.get(f["image_sha256"], []))
        if not seen and f["image_uri"]:
            seen = [f["image_uri"]]
        out.append(
            {
                "image_sha256": f["image_sha256"],
                "face_index": f["face_index"],
                "paths": seen,
                "how": f["how"],
                "score": None if f["score"] is None else round(float(f["score"]), 2),
                "source_id": f["source_id"],
                "added": iso(f["added"]),
            }
        )
    return out


class Templates:
    """One list's person templates and their FAISS index, kept current as faces are added: shared by the
    writer's Searcher and the endpoint's live indexes, so both score a person the same way."""

    def __init__(
        self,
        lake: ReadLake,
        list_id: str,
        dim: int,
        *,
        version: int | None = None,
        threads: int | None = None,
        kind: str = "auto",
    ) -> None:
        version = lake.version("person_faces") if version is None else version
        ids, sums, counts = person_sums(lake, list_id, dim, version=version)
        self.sums = dict(zip(ids, sums, strict=True))
        self.counts = dict(zip(ids, counts.tolist(), strict=True))
        vectors = template_vectors(sums, counts) if ids else np.zeros((0, dim), np.float32)
        self.index = PersonIndex.build(ids, vectors, version=version, threads=threads, normalise=False, kind=kind)

    def add_faces(self, person_ids: list[str], embeddings: np.ndarray) -> np.ndarray | None:
        """Faces given to persons (new persons too): their templates move at once.

        One face of a known person in a flat index (a scan's usual case) returns the person's new index row,
        exactly as searches now score it; otherwise None."""
        if len(person_ids) == 1 and self.index.kind == "flat" and person_ids[0] in self.index:
            # One face for a known person, face after face in a scan: the same arithmetic, without batching.
            pid, e = person_ids[0], np.asarray(embeddings, np.float64).reshape(-1)
            self.sums[pid] = total = self.sums[pid] + e / max(math.sqrt(e @ e), 1e-12)
            self.counts[pid] = n = self.counts[pid] + 1
            m = total / n
            row = (m / math.sqrt(max(math.sqrt(m @ m), 1e-12))).astype(np.float32)
            self.index.set_row(pid, row)
            return row
        emb = np.asarray(embeddings, np.float64).reshape(len(person_ids), -1)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        for pid, e in zip(person_ids, emb, strict=True):
            self.sums[pid] = self.sums.get(pid, 0) + e
            self.counts[pid] = self.counts.get(pid, 0) + 1
        ids = list(dict.fromkeys(person_ids))
        sums = np.stack([self.sums[p] for p in ids])
        self.index.add(ids, template_vectors(sums, np.array([self.counts[p] for p in ids])), normalise=False)
        return None

    def vectors(self, person_ids: list[str]) -> np.ndarray:
        """The indexed template vectors of these persons, as a search scores them."""
        if self.index.kind == "flat":
            return self.index.vectors(person_ids)
        sums = np.stack([self.sums[p] for p in person_ids])
        return template_vectors(sums, np.array([self.counts[p] for p in person_ids]))

    def remove(self, person_ids: list[str]) -> None:
        self.index.remove(person_ids)
        for p in person_ids:
            self.sums.pop(p, None)
            self.counts.pop(p, None)
