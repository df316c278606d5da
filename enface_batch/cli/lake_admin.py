"""`enface lake check`, `unlock`, `optimize` and `vacuum`: the lake itself."""

from __future__ import annotations

from typing import Annotated

import typer

from . import LakeOpt, _fail, _lake, _print, _writes, lake_app


@lake_app.command("check")
def lake_check(lake: LakeOpt = None) -> None:
    """Check every table: it opens, each log file parses, referenced data files exist, the schema matches.

    Prints a report per table; exits 1 when any table has a problem. Reads only: never takes the writer lock.
    """
    from ..lake.check import check_lake
    from ..lake.store import Lake

    report = check_lake(Lake(lake, create=False))
    if report["ok"]:
        _print(report)
        return
    bad = [t["table"] for t in report["tables"] if not t["ok"]]
    message = f"{len(bad)} table(s) with problems: {', '.join(bad)}"
    _print({"status": "error", "code": 500, "message": message, **report})
    _fail(message, 1, printed=True)


@lake_app.command("unlock")
def lake_unlock(
    force: Annotated[
        bool, typer.Option("--force", help="Remove the lock even if its holder still renews it (it may be alive)")
    ] = False,
    lake: LakeOpt = None,
) -> None:
    """Break the lake's writer lock: a stale one, or with --force any (only when its holder is surely gone)."""
    from ..lake.lock import is_stale
    from ..lake.store import Lake

    lock = Lake(lake, create=False).writer_lock()
    holder = lock.read()
    if holder is None:
        _print({"status": "ok", "lock": lock.uri, "removed": None})
        return
    if not force and not is_stale(holder):
        _fail(f"the lock {lock.uri} is held and renewed by {holder}; add --force only if that process is gone", 5)
    lock.fs.rm_file(lock.path)
    _print({"status": "ok", "lock": lock.uri, "removed": holder})


@lake_app.command("optimize")
@_writes
def lake_optimize(lake: LakeOpt = None) -> None:
    """Compact every table's small files into few large ones (deltalake's optimize; no row changes).

    Also sets the tables' retention properties if the lake predates them. Readers keep working meanwhile; the
    replaced files stay on disk for `enface lake vacuum`. Takes the writer lock.
    """
    from ..lake import upkeep

    _print(upkeep.optimize(_lake(lake)))


@lake_app.command("vacuum")
@_writes
def lake_vacuum(
    retention_hours: Annotated[
        int | None,
        typer.Option(
            "--retention-hours",
            help="Keep files any version of the last N hours uses (default and minimum: the tables' 7 days, so "
            "the endpoint's readers never lose a file they pinned)",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the files it would delete; delete nothing")] = False,
    lake: LakeOpt = None,
) -> None:
    """Delete data files that no table version within the retention uses (left by optimize, merges, deletes)."""
    from deltalake.exceptions import DeltaError, TableNotFoundError

    from ..lake import upkeep
    from ..lake.store import Lake

    try:
        # a dry run opens the lake without creating or upgrading it: it holds no lock, so it must not write
        _print(
            upkeep.vacuum(
                Lake(lake, create=False) if dry_run else _lake(lake), retention_hours=retention_hours, dry_run=dry_run
            )
        )
    except TableNotFoundError as exc:
        _fail(f"no lake there: {exc}")
    except DeltaError as exc:  # a retention under the table's delta.deletedFileRetentionDuration
        _fail(f"{exc}; readers may still use those files, so vacuum keeps at least the tables' retention (168 h)")
