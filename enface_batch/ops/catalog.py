"""Person lists, data-source groups and data sources: create and list, with the seed's validation."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable

import pyarrow.compute as pc

from ..lake.protocols import ReadLake
from ..lake.schemas import DEFAULT_GROUP_ID, DEFAULT_LIST_ID, DEFAULT_SOURCE_ID, SOURCE_DEFAULTS
from ..lake.store import Lake, now
from . import validate
from .errors import BadRequest, NotFound
from .shapes import iso_row, spent


def require_lists(lake: ReadLake, list_ids: Iterable[str], param: str) -> list[str]:
    ids = validate.uuid_list(list(list_ids), param)
    if ids:
        found = set(lake.read("person_lists", where={"list_id": ids}, columns=["list_id"])["list_id"].to_pylist())
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"{param}: person list(s) {missing} not found")
    return ids


def get_group(lake: ReadLake, group_id: str) -> dict:
    gid = validate.uuid_str(group_id, "group_id")
    rows = lake.read("source_groups", where={"group_id": gid}).to_pylist()
    if not rows:
        raise NotFound(f"source group {gid} not found")
    return rows[0]


def get_source(lake: ReadLake, source_id: str) -> dict:
    sid = validate.uuid_str(source_id, "source_id")
    rows = lake.read("sources", where={"source_id": sid}).to_pylist()
    if not rows:
        raise NotFound(f"source {sid} not found")
    return rows[0]


# -- person lists ----------------------------------------------------------------------------------------
def create_list(lake: Lake, name: str) -> dict:
    t0 = time.perf_counter()
    list_id = str(uuid.uuid4())
    lake.append("person_lists", [{"list_id": list_id, "name": validate.name(name), "created": now()}])
    return {"status": "ok", "message": "person list created", "list_id": list_id, "spent": spent(t0)}


def list_lists(lake: ReadLake) -> list[dict]:
    lists = lake.read("person_lists").to_pylist()
    persons = lake.read("persons", columns=["list_id"])
    counts = dict(zip(*pc.value_counts(persons["list_id"]).flatten(), strict=True)) if persons.num_rows else {}
    counts = {k.as_py(): v.as_py() for k, v in counts.items()}
    return [
        iso_row({**r, "default": r["list_id"] == DEFAULT_LIST_ID, "persons": counts.get(r["list_id"], 0)})
        for r in sorted(lists, key=lambda r: r["created"])
    ]


# -- source groups ---------------------------------------------------------------------------------------
def create_group(lake: Lake, name: str, person_list_search: Iterable[str] | None = None) -> dict:
    t0 = time.perf_counter()
    lists = require_lists(lake, person_list_search or [], "person_list_search")
    group_id = str(uuid.uuid4())
    lake.append(
        "source_groups",
        [{"group_id": group_id, "name": validate.name(name), "person_list_search": lists, "created": now()}],
    )
    return {"status": "ok", "message": "source group created", "group_id": group_id, "spent": spent(t0)}


def list_groups(lake: ReadLake) -> list[dict]:
    rows = lake.read("source_groups").to_pylist()
    return [
        iso_row({**r, "default": r["group_id"] == DEFAULT_GROUP_ID}) for r in sorted(rows, key=lambda r: r["created"])
    ]


def _absolute(uri: str | None) -> str | None:
    """Local paths are stored absolute, so a scan finds them from any working directory."""
    if uri is None or "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


# -- sources ---------------------------------------------------------------------------------------------
def create_source(
    lake: Lake,
    name: str,
    group_id: str,
    *,
    uri: str | None = None,
    new_person_threshold: str = SOURCE_DEFAULTS["new_person_threshold"],
    new_person_square_min: int | str = SOURCE_DEFAULTS["new_person_square_min"],
    new_person_angle_max: int | str = SOURCE_DEFAULTS["new_person_angle_max"],
    person_list_add: Iterable[str] | str | None = None,
    feature_check: Iterable[str] | str | None = None,
) -> dict:
    """The seed's /source/create defaults (SOURCE_DEFAULTS): threshold never, square 112, angle 60, no list to add
    to."""
    t0 = time.perf_counter()
    row = {
        "source_id": str(uuid.uuid4()),
        "group_id": get_group(lake, group_id)["group_id"],
        "name": validate.name(name),
        "uri": _absolute(uri),
        "new_person_threshold": validate.threshold(new_person_threshold),
        "new_person_square_min": validate.square(new_person_square_min),
        "new_person_angle_max": validate.angle(new_person_angle_max, "new_person_angle_max"),
        "person_list_add": require_lists(
            lake, validate.uuid_list(person_list_add, "person_list_add"), "person_list_add"
        ),
        "feature_check": validate.features(feature_check),
        "created": now(),
    }
    if uri is not None and not str(uri).strip():
        raise BadRequest("uri must not be empty")
    lake.append("sources", [row])
    return {"status": "ok", "message": "source created", "source_id": row["source_id"], "spent": spent(t0)}


def list_sources(lake: ReadLake, group_id: str | None = None) -> list[dict]:
    where = {"group_id": get_group(lake, group_id)["group_id"]} if group_id else None
    rows = lake.read("sources", where=where).to_pylist()
    return [
        iso_row({**r, "default": r["source_id"] == DEFAULT_SOURCE_ID}) for r in sorted(rows, key=lambda r: r["created"])
    ]


# -- updates (keep the id and the creation time) ------------------------------------------------------------
SOURCE_SETTINGS = ("name", "group_id", *SOURCE_DEFAULTS)


def update_group(lake: Lake, group_id: str, *, person_list_search: Iterable[str] | None) -> dict:
    """Replace a group's person_list_search (validated like create_group), keeping its id, name and creation time."""
    t0 = time.perf_counter()
    row = get_group(lake, group_id)
    row["person_list_search"] = require_lists(lake, person_list_search or [], "person_list_search")
    lake.upsert("source_groups", [row], keys=["group_id"], insert=False)
    return {"status": "ok", "message": "source group updated", "group_id": row["group_id"], "spent": spent(t0)}


def update_source(lake: Lake, source_id: str, **settings: object) -> dict:
    """Change the given settings of a source (validated like create_source); the others, its id and creation
    time stay. Settings: name, group_id, uri, new_person_threshold, new_person_square_min,
    new_person_angle_max, person_list_add, feature_check."""
    t0 = time.perf_counter()
    unknown = sorted(set(settings) - set(SOURCE_SETTINGS))
    if unknown:
        raise BadRequest(f"unknown source setting(s) {unknown}; settings are {', '.join(SOURCE_SETTINGS)}")
    row = get_source(lake, source_id)
    checks = {
        "name": validate.name,
        "group_id": lambda v: get_group(lake, v)["group_id"],
        "uri": lambda v: v,
        "new_person_threshold": validate.threshold,
        "new_person_square_min": validate.square,
        "new_person_angle_max": lambda v: validate.angle(v, "new_person_angle_max"),
        "person_list_add": lambda v: require_lists(lake, validate.uuid_list(v, "person_list_add"), "person_list_add"),
        "feature_check": validate.features,
    }
    for key, value in settings.items():
        row[key] = checks[key](value)
    if row["uri"] is not None and not str(row["uri"]).strip():
        raise BadRequest("uri must not be empty")
    lake.upsert("sources", [row], keys=["source_id"], insert=False)
    return {"status": "ok", "message": "source updated", "source_id": row["source_id"], "spent": spent(t0)}
