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


def build_index(lake: ReadLake, list_id: str, dim: int, version: int | None = None) -> PersonIndex:
    """A list's index of person templates from the tables (person_faces as of `version`)."""
    return Templates(lake, list_id, dim, version=version, threads=SEARCH_THREADS).index


class Searcher:
    """The writer's person search: templates per list, updated in memory as faces are assigned."""

    def __init__(self, lake: Lake, dim: int) -> None:
        self.lake, self.dim = lake, dim
        self._lists: dict[str, Templates] = {}
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
            st = Templates(self.lake, list_id, self.dim, version=version, threads=SEARCH_THREADS)
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

    def added(self, list_id: str, person_ids: list[str], embeddings: np.ndarray) -> None:
        """Persons created in this process (one face each), searchable before they are committed."""
        self._state(list_id).add_faces(person_ids, embeddings)
        self._dirty.add(list_id)

    def assigned(self, list_id: str, person_id: str, embedding: np.ndarray) -> None:
        """A face given to a person: its template moves toward the face at once."""
        st = self._state(list_id)
        if person_id in st.counts:  # else deleted meanwhile: nothing to move
            st.add_faces([person_id], embedding)
            self._dirty.add(list_id)

    def removed(self, list_id: str, person_ids: list[str]) -> None:
        self._state(list_id).remove(person_ids)
        self._dirty.add(list_id)

    def committed(self, version: int) -> None:
        """The tables now hold everything changed here, as of person_faces `version`."""
        for list_id in self._dirty:
            self._lists[list_id].index.version = version
        self._dirty.clear()


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
