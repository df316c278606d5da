"""FAISS indexes of person lists for a long-running reader, kept at the newest `person_faces` version.

The endpoint never writes, so it keeps its indexes in memory (the writer's `Searcher` builds its own). An index
holds one template per person (ops/identity.py). All loaded lists move together to the version a request
pinned: when a commit only added `person_faces` files (a scan, an enrolment), their rows move the templates
of their persons; when it removed files (a merge, a delete, a replace rewrote them), the loaded lists are
rebuilt. So a search answers from exactly the version of the request's snapshot. A request pinned to an
older version than the indexes have reached (a commit landed between two concurrent requests) gets indexes
built for its own version.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable

import numpy as np

from ..lake.reader import LakeReader, Snapshot
from ..ops.identity import Templates, unit_rows
from ..ops.search import merge_hits


class LiveIndexes:
    """One index per person list, shared by the requests of a process."""

    def __init__(self, reader: LakeReader, dim: int) -> None:
        self.reader, self.dim = reader, dim
        self._lock = threading.Lock()
        self.version: int | None = None
        self.files: frozenset[str] = frozenset()
        self._lists: dict[str, Templates] = {}

    def bind(self, snap: Snapshot) -> BoundSearcher:
        return BoundSearcher(self, snap)

    def _advance(self, snap: Snapshot) -> None:
        """Bring every loaded list to the snapshot's person_faces version (newer than the current one)."""
        version, files = snap.pin("person_faces")
        new = frozenset(files)
        plain = self.reader.table("person_faces").plain
        if self._lists and (not plain or self.files - new):
            self._lists = {lid: Templates(snap, lid, self.dim) for lid in self._lists}
        elif self._lists:
            fresh = self.reader.scan_files(
                "person_faces",
                sorted(new - self.files),
                columns=["person_id", "list_id", "embedding"],
                where={"list_id": list(self._lists)},
            )
            emb = unit_rows(fresh["embedding"], self.dim)
            ids, lists = fresh["person_id"].to_pylist(), fresh["list_id"].to_pylist()
            for lid, lst in self._lists.items():
                pick = [i for i, x in enumerate(lists) if x == lid]
                if pick:
                    lst.add_faces([ids[i] for i in pick], emb[pick])
                lst.index.version = version
        self.version, self.files = version, new

    def search(
        self, snap: Snapshot, list_ids: Iterable[str], queries: np.ndarray, k: int, exclude: Collection[str] = ()
    ) -> list[list[tuple[str, str, float]]]:
        """Per query, the k best (person_id, list_id, similarity) over the lists, best first, as of the snapshot."""
        version = snap.version("person_faces")
        wanted = list(dict.fromkeys(list_ids))
        with self._lock:
            if self.version is None or version > self.version:
                self._advance(snap)
            if version == self.version:
                for lid in wanted:
                    if lid not in self._lists:
                        self._lists[lid] = Templates(snap, lid, self.dim)
                return merge_hits({lid: self._lists[lid].index for lid in wanted}, queries, k, exclude=exclude)
        own = {lid: Templates(snap, lid, self.dim).index for lid in wanted}  # an older snapshot: its own indexes
        return merge_hits(own, queries, k, exclude=exclude)


class BoundSearcher:
    """A PersonSearch (ops/search.py) over one request's snapshot; read-only, like the endpoint."""

    def __init__(self, live: LiveIndexes, snap: Snapshot) -> None:
        self.live, self.snap = live, snap

    def search(
        self, list_ids: Iterable[str], queries: np.ndarray, k: int, *, exclude: Collection[str] = ()
    ) -> list[list[tuple[str, str, float]]]:
        return self.live.search(self.snap, list_ids, queries, k, exclude)
