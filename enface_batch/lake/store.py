"""The lake: Delta tables at a URI (a folder or s3://bucket/prefix). The only code that touches table files.

Every write is one Delta commit, so it lands whole or not at all; readers open a snapshot (a table version)
and never see a half-written change. One writer per lake at a time; readers any number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from ..fsio import fsspec_options, storage_options, url_to_fs  # noqa: F401 - both options re-exported
from ..settings import get_settings
from .check import diagnose, verify_log
from .lock import WriterLock, check_not_lost
from .migrate import migrate, pending
from .schemas import ACTION_DEFAULTS, DEFAULT_GROUP_ID, DEFAULT_LIST_ID, DEFAULT_SOURCE_ID, TABLES

# Set on every table at creation, and on older tables by `enface lake optimize` (set_properties). Why these:
# removed files are kept 7 days, so a reader that pinned a version (the endpoint pins one per request, and its
# caches at most a few versions back) never finds its files vacuumed away; the log is kept 30 days, the span
# `version=` reads and time travel can go back; a checkpoint every 50 commits keeps opening a table a replay of
# at most 50 small JSON files (a scan commits every 10 s).
TABLE_PROPERTIES = {
    "delta.deletedFileRetentionDuration": "interval 7 days",
    "delta.logRetentionDuration": "interval 30 days",
    "delta.checkpointInterval": "50",
}
MIN_RETENTION_HOURS = 7 * 24


def now() -> datetime:
    return datetime.now(UTC)


def sql_literal(value: object) -> str:
    """A value as a SQL literal for Delta predicates; strings are quoted with '' escaping."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"unsupported predicate value {value!r}")


def equality_filter(schema: pa.Schema, where: dict[str, object] | None, *, cast: bool = False) -> pc.Expression | None:
    """column == value for each item (a list value: column in values); KeyError for an unknown column.

    cast=True compares the column cast to its declared type, for files holding string_view columns.
    """
    expr = None
    for col, val in (where or {}).items():
        field = pc.field(col).cast(schema.field(col).type) if cast else pc.field(col)
        cond = field.isin(list(val)) if isinstance(val, list | tuple | set) else field == val
        expr = cond if expr is None else expr & cond
    return expr


def read_dataset(
    dataset, schema: pa.Schema, where: dict[str, object] | None, columns: Sequence[str] | None
) -> pa.Table:
    """Rows of a table's files under its declared schema, filtered by column equality.

    Files that delta-rs merges and deletes rewrote store strings as string_view, which a plain string filter
    cannot compare with. The plain filter is tried first because it skips row groups by their statistics (a
    single-row read of a 10k-row table: ~20 ms instead of ~200 ms); the cast one, which reads every row
    group, only when the files hold such columns. The result always has the declared types.
    """
    cols = list(columns) if columns else None
    try:
        table = dataset.to_table(columns=cols, filter=equality_filter(schema, where))
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        table = dataset.to_table(columns=cols, filter=equality_filter(schema, where, cast=True))
    # declared types for the table's columns; others (a dataset's "__filename") as they come
    return table.cast(
        pa.schema([schema.field(c) if c in schema.names else table.schema.field(c) for c in table.column_names])
    )


# The seed's default list, group and source every lake has (created with the tables).
_DEFAULT_KEYS = (
    ("person_lists", "list_id", DEFAULT_LIST_ID),
    ("source_groups", "group_id", DEFAULT_GROUP_ID),
    ("sources", "source_id", DEFAULT_SOURCE_ID),
)


class Lake:
    """Tables of one lake. Creating a Lake creates missing tables and the seed's default list, group, source.

    A :class:`~enface_batch.lake.protocols.ReadLake` (and the only class that writes tables).
    """

    light_columns = False  # reads return the heavy columns themselves (no "__has_image"): see ReadLake

    def __init__(self, uri: str | None = None, *, create: bool = True) -> None:
        self.uri = str(uri or get_settings().lake).rstrip("/")
        if "://" not in self.uri:
            self.uri = os.path.abspath(self.uri)
        self.options = storage_options(self.uri)
        self._verified: set[str] = set()
        # Tables this Lake has written, kept open: a commit through a kept DeltaTable costs ~6 ms against ~25 ms
        # for write_deltalake(uri), which opens the table, plus ~12 ms to open it again for its version; a scan
        # writer's commit touches six tables. Brought up to date before each write (update_incremental, ~2 ms),
        # so writes by other processes are seen as before.
        self._open: dict[str, DeltaTable] = {}
        if create and self._setup_needed():
            # Creating tables and upgrading the schema are writes: under the writer lock, so a command that
            # opens an older lake while a scan writes it waits its turn (LakeLocked) instead of racing it.
            with self.writer_lock("enface: lake setup or schema upgrade"):
                self._create()
                migrate(self)

    # -- layout -----------------------------------------------------------------------------------------
    def table_uri(self, name: str) -> str:
        if name not in TABLES:
            raise KeyError(f"no table {name!r}; tables are {sorted(TABLES)}")
        return f"{self.uri}/{name}"

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        fs, _ = url_to_fs(self.uri)
        return fs

    def fs_path(self, *parts: str) -> str:
        """A path inside the lake as self.fs names it (no protocol)."""
        return "/".join([url_to_fs(self.uri)[1].rstrip("/"), *parts])

    def _verify(self, name: str) -> None:
        """Once per table and Lake: refuse what delta-rs would misread silently (see lake.check)."""
        if name not in self._verified:
            verify_log(self.fs, self.table_uri(name), self.fs_path(name), name)
            self._verified.add(name)

    def writer_lock(self, command: str | None = None) -> WriterLock:
        """The lake's one-writer lock, to hold around every write: ``with lake.writer_lock(): ...``."""
        fs, root = url_to_fs(self.uri)
        return WriterLock(fs, root, self.uri, command=command)

    def path(self, *parts: str) -> str:
        """A non-table path inside the lake (index files), as a URI for fsspec."""
        return "/".join([self.uri, *parts])

    def _setup_needed(self) -> bool:
        if not all(self.has_table(name) for name in TABLES):
            return True
        if any(not self.read(t, where={k: v}, columns=[k]).num_rows for t, k, v in _DEFAULT_KEYS):
            return True
        return bool(pending(self))

    def _create(self) -> None:
        for name, schema in TABLES.items():
            try:
                self.table(name)
            except TableNotFoundError:
                try:
                    write_deltalake(
                        self.table_uri(name),
                        pa.Table.from_pylist([], schema),
                        mode="error",
                        configuration=TABLE_PROPERTIES,
                        storage_options=self.options,
                    )
                except Exception:  # another process created it first: fine if it now exists
                    DeltaTable(self.table_uri(name), storage_options=self.options)
        t = now()
        defaults = [
            ("person_lists", "list_id", {"list_id": DEFAULT_LIST_ID, "name": "default", "created": t}),
            (
                "source_groups",
                "group_id",
                {
                    "group_id": DEFAULT_GROUP_ID,
                    "name": "default",
                    "person_list_search": [DEFAULT_LIST_ID],
                    "created": t,
                },
            ),
            (
                "sources",
                "source_id",
                {
                    "source_id": DEFAULT_SOURCE_ID,
                    "group_id": DEFAULT_GROUP_ID,
                    "name": "default",
                    **ACTION_DEFAULTS,  # the seed's /action defaults, for requests that name no group or source
                    "created": t,
                },
            ),
        ]
        for table, key, row in defaults:
            if not self.read(table, where={key: row[key]}, columns=[key]).num_rows:
                self.upsert(table, [row], keys=[key])

    # -- reading ----------------------------------------------------------------------------------------
    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """A table's snapshot; LakeCorrupt (naming table, file and remedy) when its log is damaged."""
        self._verify(name)
        try:
            return DeltaTable(self.table_uri(name), version=version, storage_options=self.options)
        except TableNotFoundError:
            raise
        except Exception as exc:  # delta-rs' "Kernel error: Json error: ..." names neither table nor file
            raise diagnose(self.fs, self.table_uri(name), self.fs_path(name), name, exc) from exc

    def version(self, name: str) -> int:
        return self.table(name).version()

    def _writable(self, name: str) -> DeltaTable:
        """The table at its latest version, for a write; kept open across this Lake's writes (see __init__)."""
        dt = self._open.get(name)
        if dt is None:
            dt = self._open[name] = self.table(name)
        else:
            self._verify(name)
            dt.update_incremental()
        return dt

    def has_table(self, name: str) -> bool:
        """Whether the table exists (a Delta log is there); creates nothing."""
        # Not DeltaTable.is_deltatable: against an S3 endpoint (moto) it hangs for 3 minutes and then fails.
        try:
            self.table(name)
        except TableNotFoundError:
            return False
        return True

    def read(
        self,
        name: str,
        *,
        where: dict[str, object] | None = None,
        columns: Sequence[str] | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """Rows of one snapshot, filtered by column equality (a list value means 'in'); see read_dataset."""
        return read_dataset(self.table(name, version).to_pyarrow_dataset(), TABLES[name], where, columns)

    # -- writing (each call is one atomic commit) ---------------------------------------------------------
    def _arrow(self, name: str, rows: Iterable[dict] | pa.Table) -> pa.Table:
        schema = TABLES[name]
        if isinstance(rows, pa.Table):
            return rows.select(schema.names).cast(schema)
        return pa.Table.from_pylist(list(rows), schema)

    def append(self, name: str, rows: Iterable[dict] | pa.Table) -> int:
        check_not_lost(self.uri)
        self._verify(name)
        data = self._arrow(name, rows)
        if not data.num_rows:
            return self.version(name)
        dt = self._writable(name)
        write_deltalake(dt, data, mode="append")
        return dt.version()  # the version this commit made (the kept table is updated by the write)

    def upsert(self, name: str, rows: Iterable[dict] | pa.Table, *, keys: Sequence[str], insert: bool = True) -> int:
        """Replace rows whose keys match, insert the others (insert=False: only replace; unknown keys dropped)."""
        check_not_lost(self.uri)
        data = self._arrow(name, rows)
        if not data.num_rows:
            return self.version(name)
        pred = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        dt = self._writable(name)
        merge = dt.merge(source=data, predicate=pred, source_alias="s", target_alias="t")
        merge = merge.when_matched_update_all()
        if insert:
            merge = merge.when_not_matched_insert_all()
        merge.execute()
        return dt.version()

    def delete(self, name: str, where: dict[str, object]) -> int:
        if not where:
            raise ValueError("refusing to delete every row of a table")
        check_not_lost(self.uri)
        pred = " AND ".join(
            f"{c} IN ({', '.join(sql_literal(x) for x in v)})"
            if isinstance(v, list | tuple | set)
            else f"{c} = {sql_literal(v)}"
            for c, v in where.items()
        )
        dt = self._writable(name)
        dt.delete(pred)
        return dt.version()

    # -- upkeep (hold the writer lock: see lake.upkeep) -----------------------------------------------------
    def set_properties(self, name: str) -> dict[str, str]:
        """TABLE_PROPERTIES on a table made before they were set at creation; the ones it lacked."""
        check_not_lost(self.uri)
        dt = self.table(name)
        have = dt.metadata().configuration
        missing = {k: v for k, v in TABLE_PROPERTIES.items() if have.get(k) != v}
        if missing:
            dt.alter.set_table_properties(missing)
        return missing

    def optimize(self, name: str) -> dict:
        """Compact a table's small files into few large ones (one commit that changes no rows), then write a
        checkpoint so opening it reads one Parquet log file instead of every JSON commit."""
        check_not_lost(self.uri)
        dt = self.table(name)
        metrics = dt.optimize.compact()
        if metrics.get("numFilesRemoved"):
            dt.create_checkpoint()
        return metrics

    def vacuum(
        self, name: str, *, retention_hours: int | None = None, dry_run: bool = True, enforce: bool = True
    ) -> list[str]:
        """Delete files no version younger than the retention references (the table's
        delta.deletedFileRetentionDuration when None). deltalake refuses a retention shorter than that property
        unless enforce=False, which only a lake no reader is using may take (the upkeep bench's throwaway lake)."""
        if not dry_run:
            check_not_lost(self.uri)
        return self.table(name).vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=enforce
        )

    def data_files(self, name: str) -> int:
        """How many data files the current version of a table reads."""
        return len(self.table(name).file_uris())
