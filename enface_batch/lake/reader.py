"""Read-only, cached access to a lake for a long-running reader (the HTTP endpoint).

A :class:`Snapshot` pins one Delta version per table, the first time the table is touched, and every read of
that table through it sees exactly that version: a request reads one consistent state while a writer commits.
A :class:`LakeReader` keeps one open ``DeltaTable`` per table and moves it forward with ``update_incremental``
(a listing of the log, not a replay), so each request picks up new commits without a restart.

Small tables and the light columns of ``persons`` / ``person_faces`` (everything but embeddings and images)
are cached in memory per data file: a new commit only reads its new files. Other reads scan the pinned
version's files with the filter pushed down. The data files are read with pyarrow under the table's declared
schema, which also irons out the string_view columns that delta-rs merges write. Tables using features this
plain reading cannot honour (partitions, deletion vectors, column mapping) are read through delta-rs instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from pyarrow.fs import FSSpecHandler, PyFileSystem

from .schemas import TABLES
from .store import Lake, equality_filter, read_dataset

# Columns left out of the in-memory cache (large, and only needed for a few rows at a time).
HEAVY: dict[str, tuple[str, ...]] = {
    "persons": ("embedding", "image", "thumb"),
    "person_faces": ("embedding", "thumb"),
}
CACHED = ("person_lists", "source_groups", "sources", "persons", "person_faces", "users", "tokens")
_KEEP_VERSIONS = 4  # combined light tables kept per table (requests in flight may pin slightly older ones)


class ReadOnlyLake(RuntimeError):
    """A write was attempted through a read-only snapshot."""


_filter = equality_filter


class _Table:
    """One table's open DeltaTable and its per-file cache of light columns."""

    def __init__(self, reader: LakeReader, name: str) -> None:
        self.reader, self.name = reader, name
        self.schema = TABLES[name]
        self.heavy = HEAVY.get(name, ())
        # Cached: the light columns, and per heavy column whether the row has a value ("__has_image").
        self.light = [f.name for f in self.schema if f.name not in self.heavy]
        self.light_schema = pa.schema(
            [self.schema.field(c) for c in self.light] + [pa.field(f"__has_{h}", pa.bool_()) for h in self.heavy]
        )
        self.cached = name in CACHED
        self.lock = threading.Lock()
        self.dt: DeltaTable | None = None
        self.plain = True
        self.files: dict[str, pa.Table] = {}
        self.combined: OrderedDict[int, pa.Table] = OrderedDict()

    def state(self) -> tuple[int, tuple[str, ...]]:
        """The newest committed version and its data files."""
        with self.lock:
            if self.dt is None:
                self.dt = self.reader.lake.table(self.name)
            else:
                self.dt.update_incremental()
            self.plain = _plain(self.dt)
            files = tuple(self.reader.path(f) for f in self.dt.file_uris()) if self.plain else ()
            return self.dt.version(), files

    def dataset(self, files: Sequence[str]) -> ds.Dataset:
        return ds.dataset(list(files), schema=self.schema, format="parquet", filesystem=self.reader.pafs)

    def light_table(self, version: int, files: tuple[str, ...]) -> pa.Table:
        loaded: dict[str, pa.Table] = {}
        while True:
            with self.lock:
                hit = self.combined.get(version)
                if hit is not None:
                    self.combined.move_to_end(version)
                    return hit
                self.files.update(loaded)
                missing = [f for f in files if f not in self.files]
                if not missing:
                    return self._combine(version, files)
            loaded = self._read_files(missing)  # outside the lock: other tables' readers go on

    def _combine(self, version: int, files: tuple[str, ...]) -> pa.Table:
        parts = [self.files[f] for f in files]
        table = pa.concat_tables(parts) if parts else self.light_schema.empty_table()
        self.combined[version] = table
        while len(self.combined) > _KEEP_VERSIONS:
            self.combined.popitem(last=False)
        if version == max(self.combined) and len(self.files) > 2 * len(files) + 64:
            # Forget files no kept version uses any more (rewritten by merges, deletes, compaction).
            keep = set(files)
            self.files = {f: t for f, t in self.files.items() if f in keep}
            self.combined = OrderedDict([(version, table)])
        return table

    def _read_files(self, files: list[str]) -> dict[str, pa.Table]:
        table = self.dataset(files).to_table(columns=[*self.light, *self.heavy, "__filename"])
        names = table.column("__filename").combine_chunks().dictionary_encode()
        for h in self.heavy:
            table = table.append_column(f"__has_{h}", pc.is_valid(table.column(h)))
        table = table.select(self.light_schema.names).combine_chunks()
        out = {f: self.light_schema.empty_table() for f in files}
        if table.num_rows:
            codes = names.indices.to_numpy(zero_copy_only=False)
            order = np.argsort(codes, kind="stable")
            bounds = np.flatnonzero(np.diff(codes[order])) + 1
            for chunk in np.split(order, bounds):
                out[names.dictionary[codes[chunk[0]]].as_py()] = table.take(pa.array(chunk))
        return out


def _plain(dt: DeltaTable) -> bool:
    """True when the table's data files can be read as they are (no partitions, deletion vectors, mapping)."""
    proto = dt.protocol()
    if proto.reader_features and set(proto.reader_features) - {"timestampNtz"}:
        return False
    if proto.min_reader_version == 2:  # column mapping
        return False
    cfg = dt.metadata().configuration or {}
    if cfg.get("delta.columnMapping.mode", "none") != "none":
        return False
    return not dt.metadata().partition_columns


class LakeReader:
    """Shared by every request of a process: open tables, file caches. Thread-safe."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.pafs = PyFileSystem(FSSpecHandler(lake.fs))
        self._tables = {name: _Table(self, name) for name in TABLES}

    def path(self, uri: str) -> str:
        """A data file URI as a path of the lake's filesystem."""
        return self.lake.fs._strip_protocol(uri)

    def table(self, name: str) -> _Table:
        if name not in self._tables:
            raise KeyError(f"no table {name!r}; tables are {sorted(TABLES)}")
        return self._tables[name]

    def snapshot(self) -> Snapshot:
        return Snapshot(self)

    def scan_files(
        self, name: str, files: Sequence[str], *, columns: Sequence[str], where: dict[str, object] | None = None
    ) -> pa.Table:
        """Rows of some data files of a table (paths from Snapshot.files), each with its file as "__filename"."""
        t = self.table(name)
        if not files:
            return pa.schema([*(t.schema.field(c) for c in columns), pa.field("__filename", pa.string())]).empty_table()
        return read_dataset(t.dataset(files), t.schema, where, [*columns, "__filename"])


class Snapshot:
    """The lake as of one version per table (pinned on first use). A ReadLake (lake/protocols.py), so the
    ops' read functions run on it unchanged; writes raise :class:`ReadOnlyLake`."""

    light_columns = True  # persons / person_faces reads may ask for "__has_image" / "__has_thumb"

    def __init__(self, reader: LakeReader) -> None:
        self.reader = reader
        self.lake = reader.lake
        self.uri, self.options = self.lake.uri, self.lake.options
        self._pinned: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    # Lake-compatible layout helpers
    @property
    def fs(self):
        return self.lake.fs

    def path(self, *parts: str) -> str:
        return self.lake.path(*parts)

    def table_uri(self, name: str) -> str:
        return self.lake.table_uri(name)

    # pinning
    def pin(self, name: str) -> tuple[int, tuple[str, ...]]:
        """Pin a table to its newest committed version, once per snapshot."""
        with self._lock:
            if name not in self._pinned:
                self._pinned[name] = self.reader.table(name).state()
            return self._pinned[name]

    def version(self, name: str) -> int:
        return self.pin(name)[0]

    def versions(self) -> dict[str, int]:
        return {k: v for k, (v, _) in self._pinned.items()}

    def files(self, name: str) -> tuple[str, ...]:
        return self.pin(name)[1]

    def read(
        self,
        name: str,
        *,
        where: dict[str, object] | None = None,
        columns: Sequence[str] | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """Rows of the pinned version (same arguments and result as Lake.read)."""
        pinned, files = self.pin(name)
        if version is not None and version != pinned:
            return self.lake.read(name, where=where, columns=columns, version=version)
        t = self.reader.table(name)
        if not t.plain:
            return self.lake.read(name, where=where, columns=columns, version=pinned)
        return self._read_pinned(t, pinned, files, where, columns)

    @staticmethod
    def _read_pinned(
        t: _Table, pinned: int, files: tuple[str, ...], where: dict[str, object] | None, columns: Sequence[str] | None
    ) -> pa.Table:
        schema = t.schema
        cols = list(columns) if columns else schema.names
        expr = _filter(schema, where)
        if t.cached and all(c in t.light_schema.names for c in cols):
            table = t.light_table(pinned, files)
            if expr is not None:
                table = table.filter(expr)
            return table.select(cols)
        return read_dataset(t.dataset(files), schema, where, cols)

    # a snapshot never writes
    def append(self, *_, **__):
        raise ReadOnlyLake("this is a read-only snapshot of the lake")

    upsert = delete = append
