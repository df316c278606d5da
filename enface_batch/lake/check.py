"""Lake integrity: clear errors for damaged Delta logs, and the checks behind `enface lake check`.

delta-rs reports a damaged log as a bare "Kernel error: Json error: ..." naming neither table nor file, reads
a zero-byte commit file as an empty commit (the rows that commit added silently vanish), and a table whose
`_delta_log` was deleted simply looks absent, so opening the lake used to create an empty table over the data.
Here every such case becomes a LakeCorrupt naming the table, the file and what to do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import fsspec
from deltalake import DeltaTable, Schema

from .errors import LakeCorrupt
from .schemas import TABLES

_COMMIT = re.compile(r"^\d{20}\.json$")
_RESTORE = (
    "restore the table folder from a backup; or, to keep what the intact commits hold, move the damaged file "
    "away only if it is the newest commit; run `enface lake check` to see every problem"
)


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def log_listing(fs: fsspec.AbstractFileSystem, table_path: str) -> list[dict[str, Any]] | None:
    """The table's `_delta_log` entries (name, size), or None when it has no log folder."""
    log = f"{table_path}/_delta_log"
    try:
        entries = fs.ls(log, detail=True)
    except FileNotFoundError:
        return None
    if not entries and not fs.exists(log):
        return None
    return [{"name": _name(e["name"]), "path": e["name"], "size": e.get("size") or 0} for e in entries]


def has_data_files(fs: fsspec.AbstractFileSystem, table_path: str) -> bool:
    try:
        return any(_name(p).endswith(".parquet") for p in fs.find(table_path))
    except FileNotFoundError:
        return False


def empty_commits(listing: list[dict[str, Any]]) -> list[str]:
    """Zero-byte commit files: delta-rs reads them as commits that add nothing."""
    return [e["name"] for e in listing if _COMMIT.match(e["name"]) and e["size"] == 0]


def verify_log(fs: fsspec.AbstractFileSystem, table_uri: str, table_path: str, name: str) -> None:
    """Raise LakeCorrupt for what delta-rs would misread silently: a zero-byte commit, data without a log."""
    listing = log_listing(fs, table_path)
    if listing is None:
        if has_data_files(fs, table_path):
            raise missing_log(name, table_uri)
        return
    empty = empty_commits(listing)
    if empty:
        raise LakeCorrupt(
            f"table {name!r}: commit file {table_uri}/_delta_log/{empty[0]} is empty (0 bytes), so the rows it "
            f"committed would silently be missing; {_RESTORE}"
        )


def missing_log(name: str, table_uri: str) -> LakeCorrupt:
    return LakeCorrupt(
        f"table {name!r} at {table_uri} holds data files but no _delta_log (its transaction log was deleted or "
        "not copied); refusing to open it as an empty table or to create a new one over it. Restore "
        f"{table_uri}/_delta_log from a backup, or move {table_uri} away to start that table empty"
    )


def bad_commit_lines(data: bytes) -> str | None:
    """Why a commit file does not parse as JSON lines (None when it does)."""
    if not data:
        return "it is empty (0 bytes)"
    for i, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                return f"line {i} is not a JSON object"
        except ValueError as exc:
            return f"line {i} is not valid JSON ({exc}); the file is probably truncated"
    return None


def diagnose(
    fs: fsspec.AbstractFileSystem, table_uri: str, table_path: str, name: str, exc: BaseException
) -> LakeCorrupt:
    """Turn delta-rs' error on opening a table into one that names the table and the damaged file."""
    for problem in log_problems(fs, table_path):
        return LakeCorrupt(f"table {name!r}: {table_uri}/_delta_log/{problem}; {_RESTORE}")
    return LakeCorrupt(f"table {name!r} at {table_uri} cannot be read ({type(exc).__name__}: {exc}); {_RESTORE}")


def log_problems(fs: fsspec.AbstractFileSystem, table_path: str) -> list[str]:
    """Every commit file of a table that is empty or does not parse as JSON lines, as 'FILE: why'."""
    listing = log_listing(fs, table_path) or []
    out = []
    for e in sorted(listing, key=lambda e: e["name"]):
        if not _COMMIT.match(e["name"]):
            continue
        why = bad_commit_lines(fs.cat_file(e["path"])) if e["size"] else "it is empty (0 bytes)"
        if why:
            out.append(f"{e['name']}: {why}")
    return out


def check_table(lake, name: str) -> dict[str, Any]:
    """One table's report: version, data files, and every problem found (none = healthy)."""
    table_uri = lake.table_uri(name)
    fs, table_path = lake.fs, lake.fs_path(name)
    report: dict[str, Any] = {"table": name, "ok": False, "version": None, "files": 0, "problems": []}
    problems: list[str] = report["problems"]
    listing = log_listing(fs, table_path)
    if listing is None:
        problems.append(
            str(missing_log(name, table_uri)) if has_data_files(fs, table_path) else f"table {name!r} does not exist"
        )
        return report
    problems.extend(f"_delta_log/{p}" for p in log_problems(fs, table_path))
    try:
        dt = DeltaTable(table_uri, storage_options=lake.options)
    except Exception as exc:  # every failure to open is a finding
        problems.append(f"cannot be opened: {type(exc).__name__}: {exc}")
        return report
    report["version"] = dt.version()
    uris = dt.file_uris()
    report["files"] = len(uris)
    present = set(fs.find(table_path))  # one listing, not a request per file
    missing = [u for u in uris if fs._strip_protocol(u) not in present]
    problems.extend(f"data file {u} is referenced by the log but missing" for u in missing[:20])
    if len(missing) > 20:
        problems.append(f"... and {len(missing) - 20} more missing data files")
    # Compared as Delta types: Delta has no fixed-size lists, so the log holds our schema in its Delta form.
    found = {f.name: str(f.type) for f in dt.schema().fields}
    declared = {f.name: str(f.type) for f in Schema.from_arrow(TABLES[name]).fields}
    for col, typ in declared.items():
        if col not in found:
            problems.append(f"schema: column {col!r} is missing")
        elif found[col] != typ:
            problems.append(f"schema: column {col!r} is {found[col]}, expected {typ}")
    extra = sorted(set(found) - set(declared))
    if extra:
        problems.append(f"schema: unexpected columns {extra}")
    report["ok"] = not problems
    return report


def check_lake(lake) -> dict[str, Any]:
    """Every table's report; ok only when every table is healthy."""
    tables = [check_table(lake, name) for name in TABLES]
    return {"lake": lake.uri, "ok": all(t["ok"] for t in tables), "tables": tables}
