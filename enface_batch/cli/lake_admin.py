"""`enface lake check` and `enface lake unlock`: the lake itself."""

from __future__ import annotations

from typing import Annotated

import typer

from . import LakeOpt, _fail, _print, lake_app


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
