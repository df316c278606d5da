"""Face search over person lists: one FAISS index per list, one vector per person, kept in step with the lake.

A person is all its faces: its vector is the template of its `person_faces` rows (ops/identity.py), so a new
face is matched against everything known of the person, not only the face that created it. The tables are
the truth; a writer builds a list's index from them on first use and then keeps it current itself, adding
persons it creates and moving templates as it assigns faces, without re-reading the tables.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

import numpy as np

from ..index import PersonIndex
from ..lake.protocols import ReadLake
from ..lake.store import Lake
from .identity import Templates


class PersonSearch(Protocol):
    """Who in these lists looks most like each query? Implemented by the writer's Searcher and by the
    endpoint's snapshot-bound live indexes (api/searcher.py), which never change anything."""

    def search(
        self, list_ids: Iterable[str], queries: np.ndarray, k: int, *, exclude: Collection[str] = ()
    ) -> list[list[tuple[str, str, float]]]: ...


# Searches here are one face at a time, between onnxruntime calls that hold every core: waking an OpenMP
# team for a single query then cost 7 ms per search in a scan's cProfile, against 0.03 ms alone.
SEARCH_THREADS = 1

CHUNK_DEPTH = 8
"""Candidates per face and list a chunk search keeps beyond the k asked for (room for the photo's exclusions)."""


def build_index(lake: ReadLake, list_id: str, dim: int, version: int | None = None) -> PersonIndex:
    """A list's index of person templates from the tables (person_faces as of `version`)."""
    return Templates(lake, list_id, dim, version=version, threads=SEARCH_THREADS).index


class Searcher:
    """The writer's person search: templates per list, updated in memory as faces are assigned."""

    def __init__(self, lake: Lake, dim: int, *, kind: str = "auto", candidates_from: int | None = None) -> None:
        self.lake, self.dim, self.kind = lake, dim, kind
        # Lists of at least this many persons answer batches approximately (PersonIndex.use_candidates).
        self.candidates_from = candidates_from
        self._lists: dict[str, Templates] = {}
        self._chunk: ChunkSearch | None = None
        self.fallbacks = 0  # faces of chunk searches that had to be searched alone (ChunkSearch)
        self._dirty: set[str] = set()
        # Lists checked against the tables since the last refresh(); a writer that owns the lake need not
        # reopen the Delta log for every face it searches.
        self._fresh: set[str] = set()

    def refresh(self) -> None:
        """Check every index against the tables again on its next use (others may have written)."""
        self._fresh.clear()

    def _state(self, list_id: str) -> Templates:
        st = self._lists.get(list_id)
        if st is not None and (list_id in self._fresh or list_id in self._dirty):
            return st
        version = self.lake.version("person_faces")
        if st is None or st.index.version != version:
            st = Templates(self.lake, list_id, self.dim, version=version, threads=SEARCH_THREADS, kind=self.kind)
            if self.candidates_from is not None and st.index.kind == "flat" and len(st.index) >= self.candidates_from:
                st.index.use_candidates()
            self._lists[list_id] = st
        self._fresh.add(list_id)
        return st

    def index(self, list_id: str) -> PersonIndex:
        return self._state(list_id).index

    def search(
        self, list_ids: Iterable[str], queries: np.ndarray, k: int, *, exclude: Collection[str] = ()
    ) -> list[list[tuple[str, str, float]]]:
        """Per query, the k best (person_id, list_id, similarity) over all the lists, best first."""
        return merge_hits({lid: self.index(lid) for lid in dict.fromkeys(list_ids)}, queries, k, exclude=exclude)

    def chunk(self, list_ids: Iterable[str], queries: np.ndarray, depth: int) -> ChunkSearch:
        """Answer the searches of a chunk of faces with one batched search per list (see ChunkSearch)."""
        self._chunk = ChunkSearch(self, list_ids, queries, depth)
        return self._chunk

    def end_chunk(self) -> None:
        if self._chunk is not None:
            self.fallbacks += self._chunk.fallbacks
        self._chunk = None

    def templates(self, list_id: str) -> Templates:
        return self._state(list_id)

    def added(self, list_id: str, person_ids: list[str], embeddings: np.ndarray) -> None:
        """Persons created in this process (one face each), searchable before they are committed."""
        self._state(list_id).add_faces(person_ids, embeddings)
        self._dirty.add(list_id)
        if self._chunk is not None:
            self._chunk.touched(list_id, person_ids)

    def assigned(self, list_id: str, person_id: str, embedding: np.ndarray) -> None:
        """A face given to a person: its template moves toward the face at once."""
        st = self._state(list_id)
        if person_id in st.counts:  # else deleted meanwhile: nothing to move
            row = st.add_faces([person_id], embedding)
            self._dirty.add(list_id)
            if self._chunk is not None:
                self._chunk.touched(list_id, [person_id], row)

    def removed(self, list_id: str, person_ids: list[str]) -> None:
        self._state(list_id).remove(person_ids)
        self._dirty.add(list_id)

    def committed(self, version: int) -> None:
        """The tables now hold everything changed here, as of person_faces `version`."""
        for list_id in self._dirty:
            self._lists[list_id].index.version = version
        self._dirty.clear()


class ChunkSearch:
    """The searches of one chunk of faces, answered as the one-face-at-a-time Searcher would answer them.

    One batched FAISS search per list at the start gives each face its ``k + depth`` best persons. Faces are
    then resolved in order: a face's candidates are its start candidates whose templates have not changed
    since, plus every person created or moved by an earlier face of the chunk, scored against their current
    templates. A person outside both sets is unchanged and scored at most the face's last start candidate, so
    when the k-th answer reaches that score the answer is exact; otherwise (many exclusions, a chunk that
    moved most of a face's candidates) the face is searched alone against the live index (``fallbacks``).
    Lists that answer batches approximately (``PersonIndex.use_candidates``) are not checked that way.
    """

    def __init__(self, searcher: Searcher, list_ids: Iterable[str], queries: np.ndarray, depth: int) -> None:
        self.searcher = searcher
        q = np.asarray(queries, np.float32)
        self.queries = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        self.depth = depth
        self._start: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
        # Per list, the persons created or moved during the chunk: their rows in a small matrix of their
        # current index vectors, refreshed row by row as they move.
        self._touched: dict[str, dict[str, int]] = {}
        self._touched_ids: dict[str, list[str]] = {}  # the same persons in row order
        self._live_rows: dict[str, np.ndarray] = {}
        self._templates: dict[str, Templates] = {}  # the lists' templates, fixed for a chunk (no refresh within)
        self._stale: dict[str, set[str]] = {}
        self._moves = 0  # templates moved so far: a face's ranking is reused until one moves
        self._memo: tuple = (None, None)
        self.fallbacks = 0
        for lid in dict.fromkeys(list_ids):
            idx = searcher.index(lid)
            sims, _, names = idx.search_raw(self.queries, depth)
            # complete: every person of the list is a candidate of every face, nothing can be missed; an
            # approximate index is taken at its word (its recall is measured, not guaranteed).
            complete = idx.approximate or (len(idx) <= depth and not (names == None).any())  # noqa: E711
            self._start[lid] = (sims, names, complete)
            self._touched[lid] = {}
            self._touched_ids[lid] = []
            self._templates[lid] = searcher.templates(lid)

    def touched(self, list_id: str, person_ids: list[str], row: np.ndarray | None = None) -> None:
        """Persons created or moved; row: the one person's new index row when the caller has it."""
        self._moves += 1
        t = self._touched.setdefault(list_id, {})
        ids = self._touched_ids.setdefault(list_id, [])
        for p in person_ids:
            if p not in t:
                t[p] = len(t)
                ids.append(p)
        stale = self._stale.setdefault(list_id, set())
        if row is not None and len(person_ids) == 1:
            self._rows_for(list_id, len(t))[t[person_ids[0]]] = row
            stale.discard(person_ids[0])
        else:
            stale.update(person_ids)  # vectors read from the templates at the next use

    def _rows_for(self, list_id: str, n: int) -> np.ndarray:
        """The list's live matrix, grown to hold at least n rows."""
        rows = self._live_rows.get(list_id)
        if rows is None or len(rows) < n:
            grown = np.zeros((max(64, 2 * n), self.queries.shape[1]), np.float32)
            if rows is not None:
                grown[: len(rows)] = rows
            self._live_rows[list_id] = rows = grown
        return rows

    def _live(self, list_id: str) -> tuple[list[str], np.ndarray]:
        t = self._touched.get(list_id, {})
        if not t:
            return [], np.zeros((0, self.queries.shape[1]), np.float32)
        rows = self._rows_for(list_id, len(t))
        stale = list(self._stale.pop(list_id, ()))
        if stale:
            tmpl = self._templates.get(list_id) or self.searcher.templates(list_id)
            rows[[t[p] for p in stale]] = tmpl.vectors(stale)
        return self._touched_ids[list_id], rows[: len(t)]

    def search(
        self, list_ids: Iterable[str], face: int, k: int, *, exclude: Collection[str] = ()
    ) -> list[tuple[str, str, float]]:
        """The k best (person_id, list_id, similarity) of face number ``face`` over the lists, best first."""
        lids = list(dict.fromkeys(list_ids))
        if len(lids) == 1:  # one list's hits come best first already
            return [(p, lids[0], s) for p, s in self._list(lids[0], face, k, exclude)]
        merged = []
        for lid in lids:
            merged.extend((p, lid, s) for p, s in self._list(lid, face, k, exclude))
        return sorted(merged, key=lambda h: -h[2])[:k]

    def _ranked(self, list_id: str, face: int) -> list:
        """A face's candidates in a list: [names, similarities (array), their order best first (None until
        needed), the score no other person of the list can beat].

        Kept for the face's next search of the same list: a face searches a list for its matches and again
        for its person, and only its own assignment, after both, moves a template.
        """
        if self._memo[0] == (list_id, face, self._moves):
            return self._memo[1]
        sims, names, complete = self._start[list_id]
        moved, vecs = self._live(list_id)
        touched = self._touched[list_id]
        row = names[face].tolist()
        keep = [i for i, p in enumerate(row) if p is not None and p not in touched]
        cand_names = [row[i] for i in keep]
        cand = sims[face, keep]
        order: list[int] | range | None = range(len(cand_names))  # start candidates come best first
        if moved:  # the moved persons after the start candidates, ordered by a stable sort (ties: that order)
            live = vecs @ self.queries[face]
            np.minimum(live, 1.0, out=live)
            np.maximum(live, -1.0, out=live)
            cand = np.concatenate([cand, live])
            cand_names += moved
            order = None
        bound = -np.inf if complete or not sims.shape[1] else float(sims[face, -1])
        ranked = [cand_names, cand, order, bound]
        self._memo = ((list_id, face, self._moves), ranked)
        return ranked

    def _list(self, list_id: str, face: int, k: int, exclude: Collection[str]) -> list[tuple[str, float]]:
        if list_id not in self._start:
            return self.searcher.index(list_id).search(self.queries[face], k, exclude=exclude)[0]
        ranked = self._ranked(list_id, face)
        names, cand, order, bound = ranked
        hits = []
        if order is None and k == 1 and names:  # the usual question: the best one (argmax: the first of ties)
            i = int(cand.argmax())
            if names[i] not in exclude:
                hits = [(names[i], float(cand[i]))]
        if not hits:
            if order is None:
                order = ranked[2] = np.argsort(-cand, kind="stable").tolist()
            for i in order:
                if names[i] not in exclude:
                    hits.append((names[i], float(cand[i])))
                    if len(hits) == k:
                        break
        if len(hits) == k and hits[-1][1] >= bound or bound == -np.inf:
            return hits
        self.fallbacks += 1
        return self.searcher.index(list_id).search(self.queries[face], k, exclude=exclude)[0]


def merge_hits(
    indexes: dict[str, PersonIndex], queries: np.ndarray, k: int, *, exclude: Collection[str] = ()
) -> list[list[tuple[str, str, float]]]:
    """Per query, the k best (person_id, list_id, similarity) over several lists' indexes, best first."""
    merged: list[list[tuple[str, str, float]]] = [[] for _ in range(len(queries))]
    for list_id, idx in indexes.items():
        for q, hits in enumerate(idx.search(queries, k, exclude=exclude)):
            merged[q].extend((pid, list_id, sim) for pid, sim in hits)
    return [sorted(m, key=lambda h: -h[2])[:k] for m in merged]


def reindex(lake: Lake, dim: int, list_ids: Iterable[str] | None = None) -> dict:
    """Rebuild and save the FAISS index of each list (all lists by default) from the persons table."""
    ids = list(list_ids) if list_ids else lake.read("person_lists", columns=["list_id"])["list_id"].to_pylist()
    version = lake.version("person_faces")
    built = {}
    for list_id in ids:
        idx = build_index(lake, list_id, dim, version)
        idx.save(lake.path("_index", f"{list_id}.faiss"), fs=lake.fs)
        built[list_id] = {"persons": len(idx), "kind": idx.kind}
    return {"status": "ok", "version": version, "lists": built}
