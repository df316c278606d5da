"""Face search over person lists: one FAISS index per list, kept in step with the persons table.

The persons table is the truth. An index file beside the tables is stamped with the persons-table version it
reflects; on open it is reused when that version is current, re-stamped when the list's members did not
change, and rebuilt from the table otherwise. Persons created by this process are added incrementally.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

from ..index import PersonIndex
from ..lake.store import Lake

# Searches here are one face at a time, between onnxruntime calls that hold every core: waking an OpenMP
# team for a single query then cost 7 ms per search in a scan's cProfile, against 0.03 ms alone.
SEARCH_THREADS = 1


def build_index(lake: Lake, list_id: str, dim: int, version: int) -> PersonIndex:
    """A list's index from the persons table as of `version` (the truth)."""
    rows = lake.read("persons", where={"list_id": list_id}, columns=["person_id", "embedding"], version=version)
    emb = (
        np.asarray(rows["embedding"].to_pylist(), dtype=np.float32).reshape(-1, dim)
        if rows.num_rows
        else np.zeros((0, dim), np.float32)
    )
    return PersonIndex.build(rows["person_id"].to_pylist(), emb, version=version, threads=SEARCH_THREADS)


class Searcher:
    def __init__(self, lake: Lake, dim: int) -> None:
        self.lake, self.dim = lake, dim
        self._indexes: dict[str, PersonIndex] = {}
        self._dirty: set[str] = set()
        # Lists checked against the persons table since the last refresh(); a writer that owns the lake need
        # not reopen the Delta log for every face it searches.
        self._fresh: set[str] = set()

    def refresh(self) -> None:
        """Check every index against the persons table again on its next use (others may have written)."""
        self._fresh.clear()

    def _path(self, list_id: str) -> str:
        return self.lake.path("_index", f"{list_id}.faiss")

    def index(self, list_id: str) -> PersonIndex:
        idx = self._indexes.get(list_id)
        if idx is not None and list_id in self._fresh:
            return idx
        version = self.lake.version("persons")
        if idx is not None and idx.version == version:
            return idx
        if idx is None:
            idx = PersonIndex.load(self._path(list_id), fs=self.lake.fs, threads=SEARCH_THREADS)
        if idx is not None and idx.version != version:
            current = self.lake.read("persons", where={"list_id": list_id}, columns=["person_id"], version=version)
            if set(current["person_id"].to_pylist()) == set(idx.person_ids) and not idx.needs_rebuild:
                idx.version = version
            else:
                idx = None
        if idx is None:
            idx = build_index(self.lake, list_id, self.dim, version)
            self._dirty.add(list_id)
        self._indexes[list_id] = idx
        self._fresh.add(list_id)
        return idx

    def search(
        self, list_ids: Iterable[str], queries: np.ndarray, k: int, *, exclude: Collection[str] = ()
    ) -> list[list[tuple[str, str, float]]]:
        """Per query, the k best (person_id, list_id, cosine) over all the lists, best first."""
        merged: list[list[tuple[str, str, float]]] = [[] for _ in range(len(queries))]
        for list_id in dict.fromkeys(list_ids):
            for q, hits in enumerate(self.index(list_id).search(queries, k, exclude=exclude)):
                merged[q].extend((pid, list_id, sim) for pid, sim in hits)
        return [sorted(m, key=lambda h: -h[2])[:k] for m in merged]

    def added(self, list_id: str, person_ids: list[str], embeddings: np.ndarray) -> None:
        """Persons created in this process, visible to the next search before they are committed."""
        self.index(list_id).add(person_ids, embeddings)
        self._dirty.add(list_id)

    def removed(self, list_id: str, person_ids: list[str]) -> None:
        self.index(list_id).remove(person_ids)
        self._dirty.add(list_id)

    def committed(self, version: int) -> None:
        """The persons table now holds everything added or removed here: stamp the indexes and save them."""
        for list_id in self._dirty:
            idx = self._indexes[list_id]
            idx.version = version
            idx.save(self._path(list_id), fs=self.lake.fs)
        self._dirty.clear()


def reindex(lake: Lake, dim: int, list_ids: Iterable[str] | None = None) -> dict:
    """Rebuild and save the FAISS index of each list (all lists by default) from the persons table."""
    ids = list(list_ids) if list_ids else lake.read("person_lists", columns=["list_id"])["list_id"].to_pylist()
    version = lake.version("persons")
    built = {}
    for list_id in ids:
        idx = build_index(lake, list_id, dim, version)
        idx.save(lake.path("_index", f"{list_id}.faiss"), fs=lake.fs)
        built[list_id] = {"persons": len(idx), "kind": idx.kind}
    return {"status": "ok", "version": version, "lists": built}
