"""What a reader needs of a lake: the interface the read-only operations are typed against.

Two classes provide it: :class:`~enface_batch.lake.store.Lake` (a writer's or the CLI's lake, reading the
newest version of each table) and :class:`~enface_batch.lake.reader.Snapshot` (the endpoint's per-request
view, one pinned version per table, light columns cached in memory). Functions that only read take a
``ReadLake``, so the endpoint runs the same operations as the CLI; functions that write take a ``Lake``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class ReadLake(Protocol):
    """Reads of one lake: rows of a table and its version. Only what the read-only operations use (the
    layout helpers, fs/path/table_uri, stay on the classes: no reader needs them)."""

    uri: str
    # True where reads of persons / person_faces may ask for "__has_image" / "__has_thumb" (a bool per row:
    # the heavy column has a value) instead of the heavy columns themselves; a reader Snapshot caches them.
    light_columns: bool

    def version(self, name: str) -> int: ...

    def read(
        self,
        name: str,
        *,
        where: dict[str, object] | None = None,
        columns: Sequence[str] | None = None,
        version: int | None = None,
    ) -> pa.Table: ...
