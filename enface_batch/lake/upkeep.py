"""Lake upkeep: compact small files (`enface lake optimize`) and delete the ones no reader needs (`vacuum`).

Every scan commit adds a few small files per table, and merges and deletes leave the replaced ones behind;
after a year of nightly runs an analyst's scan would open thousands of files. Both steps are deltalake's own
(`DeltaTable.optimize.compact`, `DeltaTable.vacuum`) and change no rows. They run under the writer lock, by
hand or from the scheduled scan flow every ENFACE_OPTIMIZE_EVERY runs (counted in `_upkeep/state.json`).

Vacuum keeps every file a version of the last 7 days references (the tables' delta.deletedFileRetentionDuration):
the endpoint pins a version per request and holds it for seconds, so a reader never loses its files.
"""

from __future__ import annotations

import json
import time

from .schemas import TABLES
from .store import Lake, now

STATE_PATH = "_upkeep/state.json"


def optimize(lake: Lake) -> dict:
    """Set missing table properties, compact every table; per table the files before and after."""
    tables = {}
    t0 = time.perf_counter()
    for name in TABLES:
        before = lake.data_files(name)
        props = lake.set_properties(name)
        metrics = lake.optimize(name)
        tables[name] = {
            "files_before": before,
            "files_after": lake.data_files(name),
            "files_removed": metrics.get("numFilesRemoved", 0),
            "files_added": metrics.get("numFilesAdded", 0),
            **({"properties_set": props} if props else {}),
        }
    return {"status": "ok", "tables": tables, "seconds": round(time.perf_counter() - t0, 2)}


def vacuum(lake: Lake, *, retention_hours: int | None = None, dry_run: bool = False, enforce: bool = True) -> dict:
    """Delete (dry_run: list) the files of every table that no version within the retention references."""
    tables = {}
    for name in TABLES:
        files = lake.vacuum(name, retention_hours=retention_hours, dry_run=dry_run, enforce=enforce)
        tables[name] = {"files": len(files), **({"paths": sorted(files)} if dry_run else {})}
    total = sum(t["files"] for t in tables.values())
    return {
        "status": "ok",
        "dry_run": dry_run,
        "retention_hours": retention_hours,
        ("would_delete" if dry_run else "deleted"): total,
        "tables": tables,
    }


def _state(lake: Lake) -> dict:
    try:
        with lake.fs.open(lake.fs_path(STATE_PATH), "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return {"runs_since": 0}


def _save(lake: Lake, state: dict) -> None:
    lake.fs.makedirs(lake.fs_path("_upkeep"), exist_ok=True)
    with lake.fs.open(lake.fs_path(STATE_PATH), "wb") as f:
        f.write(json.dumps(state).encode())


def after_run(lake: Lake, every: int) -> dict | None:
    """Count a finished scan; every `every` runs (0: never) optimize and vacuum, and return what they did."""
    if every <= 0:
        return None
    state = _state(lake)
    state["runs_since"] = int(state.get("runs_since", 0)) + 1
    _save(lake, state)  # counted before the upkeep: if it fails, the next scan finds it due and tries again
    if state["runs_since"] < every:
        return None
    done = {"optimize": optimize(lake), "vacuum": vacuum(lake)}
    _save(lake, {"runs_since": 0, "last": now().isoformat()})
    return done
