"""FAISS indexes of person lists for a long-running reader, kept at the persons table's newest version.

The endpoint never writes, so it keeps its indexes in memory (it never saves ``_index/`` files: the writer
owns them). All loaded lists move together to the version a request pinned: the data files a new commit
added are read and their persons added; the persons of files it removed (rewritten by a merge or a delete)
are removed. So a search answers from exactly the persons-table version of the request's snapshot. A request
pinned to an older version than the indexes have reached (rare: a commit landed between two requests that
search concurrently) gets indexes built for its own version.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable

import numpy as np
import pyarrow as pa

from ..index import PersonIndex
from ..lake.reader import LakeReader, ReadOnlyLake, Snapshot


def _matrix(rows: pa.Table, dim: int) -> np.ndarray:
    if not rows.num_rows:
        return np.zeros((0, dim), np.float32)
    flat = rows.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dim)


class _List:
    def __init__(self, index: PersonIndex, by_file: dict[str, list[str]]) -> None:
        self.index, self.by_file = index, by_file


class LiveIndexes:
    """One index per person list, shared by the requests of a process."""

    def __init__(self, reader: LakeReader, dim: int) -> None:
        self.reader, self.dim = reader, dim
        self._lock = threading.Lock()
        self.version: int | None = None
        self.files: frozenset[str] = frozenset()
        self._lists: dict[str, _List] = {}

    def bind(self, snap: Snapshot) -> BoundSearcher:
        return BoundSearcher(self, snap)

    # -- building and moving forward ------------------------------------------------------------------------
    def _build(self, snap: Snapshot, list_id: str) -> _List:
        version, files = snap.pin("persons")
        if not self.reader.table("persons").plain:
            rows = snap.read("persons", where={"list_id": list_id}, columns=["person_id", "embedding"])
            ids = rows["person_id"].to_pylist()
            return _List(PersonIndex.build(ids, _matrix(rows, self.dim), version=version), {})
        rows = self.reader.scan_files("persons", files, columns=["person_id", "embedding"], where={"list_id": list_id})
        ids = rows["person_id"].to_pylist()
        by_file: dict[str, list[str]] = {}
        for pid, f in zip(ids, rows["__filename"].to_pylist(), strict=True):
            by_file.setdefault(f, []).append(pid)
        return _List(PersonIndex.build(ids, _matrix(rows, self.dim), version=version), by_file)

    def _advance(self, snap: Snapshot) -> None:
        """Bring every loaded list to the snapshot's persons version (newer than the current one)."""
        version, files = snap.pin("persons")
        new = frozenset(files)
        if self._lists and not self.reader.table("persons").plain:
            self._lists = {lid: self._build(snap, lid) for lid in self._lists}
        elif self._lists:
            added, removed = new - self.files, self.files - new
            fresh = self.reader.scan_files(
                "persons",
                sorted(added),
                columns=["person_id", "list_id", "embedding"],
                where={"list_id": list(self._lists)},
            )
            emb = _matrix(fresh, self.dim)
            ids, lists, srcs = (fresh[c].to_pylist() for c in ("person_id", "list_id", "__filename"))
            for lid, lst in list(self._lists.items()):
                gone = [p for f in removed for p in lst.by_file.pop(f, [])]
                lst.index.remove(gone)
                pick = [i for i, x in enumerate(lists) if x == lid]
                if pick:
                    mine = {ids[i]: i for i in pick}  # a person in two new files: the last one wins
                    lst.index.add(list(mine), emb[list(mine.values())])
                    for i in mine.values():
                        lst.by_file.setdefault(srcs[i], []).append(ids[i])
                lst.index.version = version
                if lst.index.needs_rebuild:
                    self._lists[lid] = self._build(snap, lid)
        self.version, self.files = version, new

    # -- searching -------------------------------------------------------------------------------------------
    def search(
        self, snap: Snapshot, list_ids: Iterable[str], queries: np.ndarray, k: int, exclude: Collection[str] = ()
    ) -> list[list[tuple[str, str, float]]]:
        """Per query, the k best (person_id, list_id, cosine) over the lists, best first, as of the snapshot."""
        version = snap.version("persons")
        wanted = list(dict.fromkeys(list_ids))
        with self._lock:
            if self.version is None or version > self.version:
                self._advance(snap)
            if version == self.version:
                for lid in wanted:
                    if lid not in self._lists:
                        self._lists[lid] = self._build(snap, lid)
                return self._search({lid: self._lists[lid].index for lid in wanted}, queries, k, exclude)
        own = {lid: self._build(snap, lid).index for lid in wanted}  # an older snapshot: its own indexes
        return self._search(own, queries, k, exclude)

    @staticmethod
    def _search(indexes: dict[str, PersonIndex], queries: np.ndarray, k: int, exclude: Collection[str]) -> list:
        merged: list[list[tuple[str, str, float]]] = [[] for _ in range(len(queries))]
        for lid, idx in indexes.items():
            for q, hits in enumerate(idx.search(queries, k, exclude=exclude)):
                merged[q].extend((pid, lid, sim) for pid, sim in hits)
        return [sorted(m, key=lambda h: -h[2])[:k] for m in merged]


class BoundSearcher:
    """The Searcher interface ActionEngine uses, over one request's snapshot; it never adds or saves."""

    def __init__(self, live: LiveIndexes, snap: Snapshot) -> None:
        self.live, self.snap = live, snap

    def search(
        self, list_ids: Iterable[str], queries: np.ndarray, k: int, *, exclude: Collection[str] = ()
    ) -> list[list[tuple[str, str, float]]]:
        return self.live.search(self.snap, list_ids, queries, k, exclude)

    def added(self, *_, **__) -> None:
        raise ReadOnlyLake("the endpoint creates no persons")

    removed = committed = added
