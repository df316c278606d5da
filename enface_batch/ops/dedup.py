"""Dedup: find persons of one list who are the same person and merge each group into its oldest person.

Similarity graph. Every face of every person of the list (its ``person_faces`` rows: the face that created it,
the faces scans matched to it, enrolled and merged ones) is put into one FAISS index (``PersonIndex``, exact
below 100k faces) and asks for its ``k`` nearest faces; a pair of persons becomes a candidate when one of their
face pairs scores at least the threshold. Only candidate pairs are ever compared, so the work grows with n*k,
never n^2.

Clustering: constrained average linkage (UPGMA) over the candidate graph. Two clusters are merged, best pair
first, while the mean cosine over *all* face pairs between them scores at least the threshold. Why not the
alternatives (measured on att_faces and lfw_dev with ``bench/dedup_eval.py``):

* single linkage (= connected components of the thresholded graph) chains: the threshold is a per-pair false
  match rate (about 1e-4 at "90"), a list of n persons has n^2/2 pairs, so large lists hold many stray edges
  and each one joins two unrelated people, and through them their whole clusters. A merge rewrites the persons
  lists, so a false merge costs far more than a missed one.
* complete linkage (every face pair above the threshold) never chains, but one bad photo of a person (profile,
  blur, decades apart) keeps its duplicates apart.
* average linkage asks the two clusters to be similar *as a whole*: a single stray high pair is outvoted by the
  low ones around it, while a few weak pairs inside one identity are carried by the strong ones. It is also
  reducible, so merges happen in a deterministic order of decreasing linkage and a re-run over the result
  finds nothing left to merge.

  Pairwise precision / recall at "90" (sface), lfw_dev, 400 people, 1760 photos: average 100 % / 98.2 %,
  single 17.7 % / 99.5 %, complete 100 % / 92.8 %; att_faces (400 photos): average 100 % / 100 %.

The threshold is a per-pair rate, so false merges grow with the square of the list: on all of lfw_dev (3811
photos, 2086 people, 1340 of them with one photo) "90" still mixes 79 clusters (precision 97.5 %), "95" 15
(99.6 %, 3 of them one person under two LFW names). Use 95 for lists of thousands, and review ``merges``.

Cannot-link: two different faces of one photo (same ``image_sha256``, different ``face_index``) are two people,
so clusters holding such a pair are never merged, whatever their similarity. The same face of the same photo
(same hash and index, e.g. one photo enrolled twice) is no conflict.

Merging keeps the oldest person of a cluster (earliest ``created``, then ``person_id``). Every face row of the
others moves to the survivor (``how`` = merged, ``from_person_id`` = where it was), fields are unioned in order,
the others are deleted, and one ``merges`` row per cluster records it. The commits come in an order that a
crash between any two loses nothing:

1. ``merges`` (the journal: survivor and merged ids),
2. ``person_faces`` (the merged persons' face rows move to the survivor),
3. ``persons`` upsert of the survivors (fields),
4. ``persons`` delete of the merged persons, last.

A run first finishes any journalled merge whose merged persons still exist (a crash after step 1-3), redoing
steps 2-4 for it. Merge ids are uuid5 of run-independent keys (list, sorted member ids) and face rows keep
their ids, so redone steps upsert the same rows instead of adding copies, and deleting is idempotent.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..index import PersonIndex
from ..lake.store import Lake, now
from ..scoring import DEFAULT_EMBEDDER, calibration_for
from . import validate
from .catalog import require_lists
from .errors import BadRequest
from .identity import own_face
from .refine import refine
from .shapes import spent

log = logging.getLogger(__name__)

K_NEIGHBOURS = 20
"""Nearest faces asked per face (plus the person's own faces, which take places in the answer)."""

LINKAGES = ("average", "single", "complete")
NAMESPACE = uuid.UUID("5b0e6f3c-1d7e-4c55-9d0b-6a4f8f0de2a1")  # uuid5 namespace of dedup's merge and face ids
_OWN_FACES_MAX = 200  # extra places asked for a person's own faces, at most


def merge_id(list_id: str, kept: str, merged: Sequence[str]) -> str:
    return str(uuid.uuid5(NAMESPACE, f"merge|{list_id}|{kept}|{','.join(sorted(merged))}"))


# ------------------------------------------------------------------------------------------------ clustering
def conflicts(a: dict[str, set[int]], b: dict[str, set[int]]) -> bool:
    """Cannot-link: do two clusters hold different faces (face_index) of one photo (image_sha256)?

    ``a`` and ``b`` map image hash -> face indexes of the cluster's faces from that image.
    """
    if len(a) > len(b):
        a, b = b, a
    return any(sha in b and len(idx | b[sha]) > 1 for sha, idx in a.items())


@dataclass
class _Cluster:
    members: list[int]  # person positions, in age order
    faces: np.ndarray  # face rows
    total: np.ndarray  # sum of its unit face vectors: mean pair cosine of a and b = total_a . total_b / (n_a n_b)
    photos: dict[str, set[int]]  # image_sha256 -> face indexes
    low: float = float("inf")  # lowest linkage that joined it


def cluster_persons(
    embeddings: np.ndarray,
    owner: np.ndarray,
    image_sha256: Sequence[str | None],
    face_index: Sequence[int | None],
    n_persons: int,
    *,
    min_similarity: float,
    k: int = K_NEIGHBOURS,
    linkage: str = "average",
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[tuple[list[int], float]]:
    """Clusters of persons to merge: ``[(sorted person positions, lowest linking cosine)]``, 2+ persons each.

    ``embeddings`` has one row per face (any norm), ``owner[i]`` is the position (0..n_persons-1) of the person
    face ``i`` belongs to; persons are merged into the lowest position of their cluster by the caller, so pass
    them oldest first. ``min_similarity`` is the cosine of the threshold score. Deterministic.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    owner = np.asarray(owner, dtype=np.int64)
    n_faces = len(owner)
    if n_faces == 0:
        return []
    emb = np.asarray(embeddings, dtype=np.float32)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    faces_of: list[list[int]] = [[] for _ in range(n_persons)]
    for i, p in enumerate(owner.tolist()):
        faces_of[p].append(i)

    # candidate graph: persons with at least one face pair at or above the threshold, from k-NN over faces
    # Exact: one batched query of every face, where flat beats IVF at any size (bench/search_scale.py).
    index = PersonIndex.build([str(i) for i in range(n_faces)], emb, version=0, kind="flat", threads=threads)
    own = np.array([len(faces_of[p]) for p in owner.tolist()])
    kq = np.minimum(n_faces, k + np.minimum(own, _OWN_FACES_MAX))
    edges: set[tuple[int, int]] = set()
    searched = 0
    if on_progress:
        on_progress(0, n_faces)
    for kk in np.unique(kq).tolist():
        rows = np.flatnonzero(kq == kk)
        for s in range(0, len(rows), 4096):
            chunk = rows[s : s + 4096]
            for f, hits in zip(chunk.tolist(), index.search(emb[chunk], int(kk)), strict=True):
                p = int(owner[f])
                for name, sim in hits:
                    if sim < min_similarity:
                        break  # best first
                    q = int(owner[int(name)])
                    if q != p:
                        edges.add((p, q) if p < q else (q, p))
            searched += len(chunk)
            if on_progress:
                on_progress(searched, n_faces)

    clusters: dict[int, _Cluster] = {}
    for p in sorted({x for e in edges for x in e}):
        photos: dict[str, set[int]] = defaultdict(set)
        for f in faces_of[p]:
            if image_sha256[f] is not None:
                photos[image_sha256[f]].add(-1 if face_index[f] is None else int(face_index[f]))
        rows = np.asarray(faces_of[p], dtype=np.int64)
        clusters[p] = _Cluster([p], rows, emb[rows].sum(axis=0, dtype=np.float64), dict(photos))
    nbrs: dict[int, set[int]] = defaultdict(set)
    heap: list[tuple[float, int, int, float]] = []

    def link(a: int, b: int) -> None:
        """Record a and b as neighbours and queue them when they may merge."""
        ca, cb = clusters[a], clusters[b]
        if conflicts(ca.photos, cb.photos):
            return  # a conflict only grows with merges: these two never meet again
        nbrs[a].add(b)
        nbrs[b].add(a)
        if linkage == "average":  # the mean over all face pairs, in O(d)
            sim = float(ca.total @ cb.total) / (len(ca.faces) * len(cb.faces))
        else:
            pairs = emb[ca.faces] @ emb[cb.faces].T
            sim = float(pairs.max() if linkage == "single" else pairs.min())
        if sim >= min_similarity:
            heapq.heappush(heap, (-sim, min(a, b), max(a, b), sim))

    for a, b in sorted(edges):
        link(a, b)
    next_id = n_persons
    while heap:
        _, a, b, sim = heapq.heappop(heap)
        if a not in clusters or b not in clusters:
            continue  # one of them merged since: a fresh entry was queued for the new cluster
        ca, cb = clusters.pop(a), clusters.pop(b)
        big, small = (ca, cb) if len(ca.photos) >= len(cb.photos) else (cb, ca)
        for sha, idx in small.photos.items():  # the dead clusters' maps are not used again: grow the larger
            big.photos.setdefault(sha, set()).update(idx)
        c = next_id
        next_id += 1
        clusters[c] = _Cluster(
            sorted(ca.members + cb.members),
            np.concatenate([ca.faces, cb.faces]),
            ca.total + cb.total,
            big.photos,
            min(ca.low, cb.low, sim),
        )
        around = (nbrs.pop(a, set()) | nbrs.pop(b, set())) - {a, b}
        for x in sorted(around):
            nbrs[x] -= {a, b}
            link(c, x)
    out = [(cl.members, cl.low) for cl in clusters.values() if len(cl.members) > 1]
    return sorted(out, key=lambda m: m[0][0])


# ------------------------------------------------------------------------------------------------ lake state
def _matrix(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<float> column as an (n, d) float32 matrix of unit rows, and a mask of the usable rows."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    lens = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    dims = set(lens[lens > 0].tolist())
    if len(dims) > 1:
        raise BadRequest(f"embeddings of the list have different sizes {sorted(dims)}: persons of several models")
    d = dims.pop() if dims else 0
    mat = np.zeros((n, max(d, 1)), np.float32)
    ok = lens == d if d else np.zeros(n, bool)
    if ok.any():
        mat[ok] = arr.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    norms = np.linalg.norm(mat, axis=1)
    ok &= np.isfinite(norms) & (norms > 0)
    mat[ok] /= norms[ok, None]
    return mat, ok


@dataclass
class _State:
    """What dedup needs of one list, in memory: persons oldest first and the faces of each."""

    ids: list[str]
    fields: dict[str, list[str]]
    emb: np.ndarray  # every usable face embedding of the list, unit rows
    sha: list[str | None]
    index: list[int | None]
    faces: dict[str, list[int]] = field(default_factory=dict)  # person -> rows of emb

    def apply(self, kept: str, merged: Sequence[str]) -> None:
        """The merge, in memory (what the writes do to the lake)."""
        gone = set(merged)
        for m in merged:
            self.faces[kept].extend(self.faces.pop(m, []))
            self.fields[kept] = union_fields(self.fields[kept], self.fields.pop(m, []))
        self.ids = [p for p in self.ids if p not in gone]


def union_fields(*lists: Sequence[str] | None) -> list[str]:
    return list(dict.fromkeys(f for fs in lists for f in (fs or [])))


def _load(lake: Lake, list_id: str) -> _State:
    persons = lake.read("persons", where={"list_id": list_id}, columns=["person_id", "created", "fields", "embedding"])
    if persons.num_rows:
        persons = persons.take(pc.sort_indices(persons, [("created", "ascending"), ("person_id", "ascending")]))
    ids = persons["person_id"].to_pylist()
    present = set(ids)
    faces = lake.read(
        "person_faces",
        where={"list_id": list_id},
        columns=["person_id", "face_id", "embedding", "image_sha256", "face_index"],
    )
    if faces.num_rows:
        faces = faces.filter(pa.array([p in present for p in faces["person_id"].to_pylist()], pa.bool_()))
        faces = faces.take(pc.sort_indices(faces, [("person_id", "ascending"), ("face_id", "ascending")]))
    # a person without face rows (a crash inside person create) is its own embedding
    with_faces = set(faces["person_id"].to_pylist())
    bare = [i for i, p in enumerate(ids) if p not in with_faces]
    both = pa.concat_arrays(
        [
            faces["embedding"].combine_chunks().cast(pa.list_(pa.float32())),
            persons["embedding"].combine_chunks().cast(pa.list_(pa.float32())).take(pa.array(bare, pa.int64())),
        ]
    )
    emb, ok = _matrix(both)
    owners = faces["person_id"].to_pylist() + [ids[i] for i in bare]
    shas = faces["image_sha256"].to_pylist() + [None] * len(bare)
    idxs = faces["face_index"].to_pylist() + [None] * len(bare)
    rows = np.flatnonzero(ok)
    state = _State(
        ids=ids,
        fields={p: list(f or []) for p, f in zip(ids, persons["fields"].to_pylist(), strict=True)},
        emb=emb[rows],
        sha=[shas[r] for r in rows.tolist()],
        index=[idxs[r] for r in rows.tolist()],
        faces={p: [] for p in ids},
    )
    for new, r in enumerate(rows.tolist()):
        state.faces[owners[r]].append(new)
    return state


# ------------------------------------------------------------------------------------------------ writes
def _write(lake: Lake, list_id: str, merges: list[tuple[str, list[str]]], journal: list[dict]) -> None:
    """Steps 1-4 of the module doc for ``merges`` [(kept, merged ids)]; ``journal``: new merges rows."""
    if journal:
        lake.upsert("merges", journal, keys=["merge_id"])
    if not merges:
        return
    t = now()
    merged_all = [m for _, ms in merges for m in ms]
    kept_all = [k for k, _ in merges]
    full = {
        r["person_id"]: r
        for r in lake.read("persons", where={"list_id": list_id, "person_id": kept_all + merged_all}).to_pylist()
    }
    rows_of: dict[str, list[dict]] = defaultdict(list)
    for r in lake.read("person_faces", where={"list_id": list_id, "person_id": merged_all}).to_pylist():
        rows_of[r["person_id"]].append(r)
    face_rows, survivors = [], []
    for kept, merged in merges:
        survivor = full.get(kept)
        if survivor is None:  # deleted under us: leave its would-be merged persons alone
            log.warning("dedup: survivor %s of list %s is gone; not merging %s", kept, list_id, merged)
            continue
        for m in merged:
            p = full.get(m)
            if p is None:
                continue  # already deleted: merged by an earlier attempt (its faces moved then)
            rows = rows_of.get(m) or [own_face(p, "created")]  # a person without face rows keeps its face this way
            for r in sorted(rows, key=lambda r: r["face_id"]):
                face_rows.append({**r, "person_id": kept, "from_person_id": m, "how": "merged", "added": t})
            survivor["fields"] = union_fields(survivor["fields"], p["fields"])
        survivor["updated"] = t
        survivors.append(survivor)
    lake.upsert("person_faces", face_rows, keys=["list_id", "face_id"])
    lake.upsert("persons", survivors, keys=["person_id", "list_id"], insert=False)
    gone = [m for (k, ms) in merges if k in full for m in ms if m in full]
    if gone:
        lake.delete("persons", {"list_id": list_id, "person_id": gone})


# ------------------------------------------------------------------------------------------------ operation
def dedup(
    lake: Lake,
    list_id: str,
    *,
    threshold: str = "90",
    embedder: str = DEFAULT_EMBEDDER,
    dry_run: bool = False,
    run_id: str | None = None,
    k: int = K_NEIGHBOURS,
    linkage: str = "average",
    refine_faces: bool = True,
    on_progress: Callable[..., None] | None = None,
) -> dict:
    """Merge the persons of a list that are the same person into the oldest of them (see the module doc).

    ``threshold`` is the Enface score two clusters must reach (80, 85, 90, 95 or no_match). Then, unless
    ``refine_faces`` is off, single matched faces move to the person they fit best or are split off
    (ops/refine.py). With ``dry_run`` the same merges are computed and returned, and nothing is written (the
    refinement counts are then planned on the list as it is, before the merges). ``on_progress(stage, done,
    total)`` hears of the neighbour search over the list's faces and of the refinement.
    """
    t0 = time.perf_counter()
    lid = require_lists(lake, [validate.uuid_str(list_id, "list_id")], "list_id")[0]
    thr = validate.threshold(threshold, "threshold")
    if thr == "never":
        raise BadRequest("threshold must be one of 80, 85, 90, 95, no_match; 'never' would merge nothing")
    if linkage not in LINKAGES:
        raise BadRequest(f"linkage must be one of {', '.join(LINKAGES)}; got {linkage!r}")
    cal = calibration_for(embedder)
    min_sim = cal.similarity_for(cal.threshold(thr))
    run_id = run_id or str(uuid.uuid4())
    state = _load(lake, lid)
    before = len(state.ids)

    # finish what a crash left: journalled merges whose merged persons still exist
    present = set(state.ids)
    pending = []
    journal_rows = lake.read("merges", where={"list_id": lid}).to_pylist()
    for m in sorted(journal_rows, key=lambda r: (r["created"], r["merge_id"])):
        left = [p for p in m["merged_person_ids"] or [] if p in present]
        if left and m["kept_person_id"] in present:
            pending.append((m["kept_person_id"], left))
            state.apply(m["kept_person_id"], left)
            present -= set(left)
    if pending and not dry_run:
        _write(lake, lid, pending, [])

    pos = {p: i for i, p in enumerate(state.ids)}
    owner = np.array([pos[p] for p in state.ids for _ in state.faces[p]], dtype=np.int64)
    rows = [r for p in state.ids for r in state.faces[p]]
    clusters = cluster_persons(
        state.emb[rows] if rows else np.zeros((0, 1), np.float32),
        owner,
        [state.sha[r] for r in rows],
        [state.index[r] for r in rows],
        len(state.ids),
        min_similarity=min_sim,
        k=k,
        linkage=linkage,
        on_progress=(lambda done, total: on_progress("neighbours", done, total)) if on_progress else None,
    )
    t = now()
    merged, plan, journal = [], [], []
    for members, low in clusters:
        kept, others = state.ids[members[0]], [state.ids[m] for m in members[1:]]
        score = round(float(cal.score(low)), 2)
        merged.append({"kept": kept, "merged": others, "score": score})
        plan.append((kept, others))
        journal.append(
            {
                "merge_id": merge_id(lid, kept, others),
                "run_id": run_id,
                "list_id": lid,
                "kept_person_id": kept,
                "merged_person_ids": sorted(others),
                "score": score,
                "created": t,
            }
        )
    for kept, others in plan:
        state.apply(kept, others)
    if plan and not dry_run:
        _write(lake, lid, plan, journal)
    if on_progress and refine_faces:
        on_progress("refine", 0, 1, unit="steps")
    refined = refine(lake, lid, min_similarity=min_sim, dry_run=dry_run) if refine_faces else {}
    if on_progress and refine_faces:
        on_progress("refine", 1, 1, unit="steps")
    return {
        "status": "ok",
        "list_id": lid,
        "persons_before": before,
        "persons_after": len(state.ids) + refined.get("faces_split", 0),
        "merged": merged,
        **refined,
        "recovered": [{"kept": k_, "merged": ms} for k_, ms in pending],
        "threshold": thr,
        "dry_run": dry_run,
        "run_id": run_id,
        "spent": spent(t0),
    }
