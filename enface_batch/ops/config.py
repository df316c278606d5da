"""Declarative configuration: person lists, source groups and sources described in YAML, applied idempotently.

`load(path)` reads and checks a file on its own (keys, types, enums, ${VAR}s, duplicate names);
`apply(lake, config)` resolves names against the lake, validates every reference, and only then writes:
missing objects are created with the catalog functions, changed ones updated in place (same id), unchanged
ones left alone, so applying the same file twice makes no Delta commit the second time. See
configs/example.yaml for the format.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..lake.schemas import DEFAULT_GROUP_ID, DEFAULT_LIST_ID, DEFAULT_SOURCE_ID, SOURCE_DEFAULTS
from ..lake.store import Lake
from . import catalog, validate
from .errors import BadRequest, NotFound

TOP_KEYS = ("lists", "groups", "sources")
LIST_KEYS = ("name",)
GROUP_KEYS = ("name", "person_list_search")
SOURCE_KEYS = ("name", "group", *SOURCE_DEFAULTS)  # omitted settings take the seed's /source/create defaults
SETTINGS = tuple(SOURCE_DEFAULTS)
_VAR = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Config:
    """A checked file: names and settings, references (list and group names or ids) not yet resolved."""

    path: Path
    lists: list[dict] = field(default_factory=list)  # {"name"}
    groups: list[dict] = field(default_factory=list)  # {"name", "person_list_search", "where"}
    sources: list[dict] = field(default_factory=list)  # {"name", "group", settings..., "where"}


# -- reading and checking the file ------------------------------------------------------------------------------
def _expand(value: str, where: str) -> str:
    def sub(m: re.Match) -> str:
        var = m.group(1)
        if not _NAME.fullmatch(var):
            raise BadRequest(f"{where}: ${{{var}}} is not a valid environment variable reference")
        if var not in os.environ:
            raise BadRequest(f"{where}: environment variable {var} is not set (referenced as ${{{var}}})")
        return os.environ[var]

    return _VAR.sub(sub, value)


def _expand_all(node: object, where: str) -> object:
    if isinstance(node, str):
        return _expand(node, where)
    if isinstance(node, list):
        return [_expand_all(v, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: _expand_all(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    return node


def _entries(doc: dict, key: str, allowed: tuple[str, ...]) -> list[tuple[str, dict]]:
    items = doc.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadRequest(f"{key} must be a list of mappings")
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be a mapping with a name, got {item!r}")
        unknown = [k for k in item if k not in allowed]
        if unknown:
            raise BadRequest(f"{where}.{unknown[0]}: unknown key {unknown[0]!r}; allowed keys are {', '.join(allowed)}")
        if "name" not in item:
            raise BadRequest(f"{where}.name is required")
        item = dict(item)
        item["name"] = validate.name(item["name"], f"{where}.name")
        out.append((where, item))
    return out


def _refs(value: object, where: str) -> list[str]:
    """A list of list references (names or ids); a single string counts as a one-item list."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"{where} must be a list of person list names or ids, got {value!r}")
    return list(dict.fromkeys(value))


def _uri(value: object, where: str, base: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where} must be a non-empty string (a folder or URI), got {value!r}")
    if "://" in value:
        return value
    return os.path.normpath(base / os.path.expanduser(value))


def _duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    dups = [n for n in names if n in seen or seen.add(n)]
    if dups:
        raise BadRequest(f"duplicate {what} name(s) in the file: {sorted(set(dups))}")


def parse(doc: object, path: str | Path) -> Config:
    """Check a parsed YAML document; relative uris are resolved against path's folder."""
    path = Path(path).resolve()
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise BadRequest(f"{path.name}: the top level must be a mapping with {', '.join(TOP_KEYS)}")
    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown key {unknown[0]!r}; allowed top-level keys are {', '.join(TOP_KEYS)}")
    doc = _expand_all(doc, "")
    cfg = Config(path=path)
    for where, item in _entries(doc, "lists", LIST_KEYS):
        cfg.lists.append({"name": item["name"], "where": where})
    for where, item in _entries(doc, "groups", GROUP_KEYS):
        refs = _refs(item.get("person_list_search"), f"{where}.person_list_search")
        cfg.groups.append({"name": item["name"], "person_list_search": refs, "where": where})
    for where, item in _entries(doc, "sources", SOURCE_KEYS):
        group = item.get("group")
        if not isinstance(group, str) or not group:
            raise BadRequest(f"{where}.group is required: the name or id of the source's group")
        s = {**SOURCE_DEFAULTS, **item, "where": where}
        s["uri"] = _uri(s["uri"], f"{where}.uri", path.parent)
        s["new_person_threshold"] = validate.threshold(s["new_person_threshold"], f"{where}.new_person_threshold")
        s["new_person_square_min"] = validate.square(s["new_person_square_min"], f"{where}.new_person_square_min")
        s["new_person_angle_max"] = validate.angle(s["new_person_angle_max"], f"{where}.new_person_angle_max")
        s["person_list_add"] = _refs(s["person_list_add"], f"{where}.person_list_add")
        fc = s["feature_check"]
        if not (fc is None or isinstance(fc, str) or (isinstance(fc, list) and all(isinstance(v, str) for v in fc))):
            raise BadRequest(f"{where}.feature_check must be a list of gender, age, race; got {fc!r}")
        try:
            s["feature_check"] = validate.features(fc)
        except BadRequest as exc:
            raise BadRequest(f"{where}.{exc.message}") from None
        cfg.sources.append(s)
    _duplicates([x["name"] for x in cfg.lists], "list")
    _duplicates([x["name"] for x in cfg.groups], "group")
    return cfg


def load(path: str | Path) -> Config:
    """Read and check a YAML file (without touching any lake)."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"configuration file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"cannot read configuration file {path}: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path.name} is not valid YAML: {exc}") from None
    return parse(doc, path)


# -- resolving against the lake ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _New:
    """A list or group this apply creates: its id is known only once it is written."""

    kind: str
    name: str


def _catalog(lake: Lake) -> tuple[list[dict], list[dict], list[dict]]:
    """The lake's lists, groups and sources; a lake opened with create=False and not made yet has the seed's."""
    from deltalake.exceptions import TableNotFoundError

    try:
        return tuple(lake.read(t).to_pylist() for t in ("person_lists", "source_groups", "sources"))
    except TableNotFoundError:
        return (
            [{"list_id": DEFAULT_LIST_ID, "name": "default"}],
            [{"group_id": DEFAULT_GROUP_ID, "name": "default", "person_list_search": [DEFAULT_LIST_ID]}],
            [{"source_id": DEFAULT_SOURCE_ID, "group_id": DEFAULT_GROUP_ID, "name": "default"}],
        )


def _by_name(rows: list[dict], name: str, key: str, default_id: str | None, what: str, where: str) -> str | None:
    ids = [r[key] for r in rows if r["name"] == name]
    if default_id in ids and name == "default":
        return default_id
    if len(ids) > 1:
        raise BadRequest(f"{where}: {len(ids)} existing {what}s are named {name!r} ({ids}); use an id instead")
    return ids[0] if ids else None


def _as_uuid(ref: str) -> str | None:
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        return None


def _resolve(ref: str, file_ids: dict, rows: list[dict], key: str, default_id: str, what: str, where: str):
    """A reference: a name of this file, "default", an existing id, or an existing name (in that order)."""
    if ref in file_ids:
        return file_ids[ref]
    if ref == "default":
        return default_id
    uid = _as_uuid(ref)
    if uid and any(r[key] == uid for r in rows):
        return uid
    found = _by_name(rows, ref, key, default_id, what, where)
    if found:
        return found
    raise NotFound(f"{where}: {what} {ref!r} is not in this file and no existing {what} has that name or id")


def _plan(lake: Lake, cfg: Config) -> dict:
    lists, groups, sources = _catalog(lake)
    plan: dict = {"lists": [], "groups": [], "sources": []}

    list_ids: dict[str, object] = {}
    for x in cfg.lists:
        lid = _by_name(lists, x["name"], "list_id", DEFAULT_LIST_ID, "person list", x["where"])
        list_ids[x["name"]] = lid or _New("list", x["name"])
        plan["lists"].append({"name": x["name"], "id": lid, "op": "unchanged" if lid else "created"})

    def lists_of(refs: list[str], where: str) -> list:
        out = [_resolve(r, list_ids, lists, "list_id", DEFAULT_LIST_ID, "person list", where) for r in refs]
        return list(dict.fromkeys(out))

    group_ids: dict[str, object] = {}
    group_names: dict[object, str] = {r["group_id"]: r["name"] for r in groups}
    for g in cfg.groups:
        where = g["where"]
        search = lists_of(g["person_list_search"], f"{where}.person_list_search")
        gid = _by_name(groups, g["name"], "group_id", DEFAULT_GROUP_ID, "source group", where)
        if gid is None:
            op = "created"
        else:
            current = next(r for r in groups if r["group_id"] == gid)
            op = "unchanged" if list(current.get("person_list_search") or []) == search else "updated"
        group_ids[g["name"]] = gid or _New("group", g["name"])
        group_names[group_ids[g["name"]]] = g["name"]
        plan["groups"].append({"name": g["name"], "id": gid, "op": op, "person_list_search": search})

    seen: set = set()
    for s in cfg.sources:
        where = s["where"]
        gid = _resolve(s["group"], group_ids, groups, "group_id", DEFAULT_GROUP_ID, "source group", f"{where}.group")
        if (gid, s["name"]) in seen:
            raise BadRequest(f"{where}: duplicate source name {s['name']!r} in group {group_names[gid]!r}")
        seen.add((gid, s["name"]))
        want = {k: s[k] for k in SETTINGS}
        want["person_list_add"] = lists_of(s["person_list_add"], f"{where}.person_list_add")
        sid, changed = None, {}
        if not isinstance(gid, _New):
            same = [r for r in sources if r["group_id"] == gid and r["name"] == s["name"]]
            if len(same) > 1:
                ids = [r["source_id"] for r in same]
                raise BadRequest(f"{where}: {len(same)} existing sources of the group are named {s['name']!r} ({ids})")
            if same:
                sid = same[0]["source_id"]
                changed = {k: v for k, v in want.items() if _norm(same[0].get(k)) != _norm(v)}
        op = "created" if sid is None else ("updated" if changed else "unchanged")
        plan["sources"].append(
            {
                "name": s["name"],
                "group": group_names[gid],
                "group_id": gid,
                "id": sid,
                "op": op,
                "settings": want,
                "changed": changed,
            }
        )
    return plan


def _norm(v: object) -> object:
    return list(v) if isinstance(v, list | tuple) else v


# -- applying ---------------------------------------------------------------------------------------------------
def _source_labels(plan_sources: list[dict]) -> list[str]:
    """Source names, or "group/name" where one name is used in several groups of the file."""
    counts: dict[str, int] = {}
    for s in plan_sources:
        counts[s["name"]] = counts.get(s["name"], 0) + 1
    return [s["name"] if counts[s["name"]] == 1 else f"{s['group']}/{s['name']}" for s in plan_sources]


def apply(lake: Lake, config: Config | str | Path, *, dry_run: bool = False) -> dict:
    """Create what is missing, update what differs, leave the rest; dry_run only reports what it would do.

    Every check (file and references) runs before the first write, so a bad file changes nothing."""
    cfg = config if isinstance(config, Config) else load(config)
    plan = _plan(lake, cfg)
    ids: dict[_New, str] = {}

    def real(v):
        if isinstance(v, _New):
            return ids.get(v)
        return v

    if not dry_run:
        for x in plan["lists"]:
            if x["op"] == "created":
                x["id"] = ids[_New("list", x["name"])] = catalog.create_list(lake, x["name"])["list_id"]
        for g in plan["groups"]:
            search = [real(v) for v in g["person_list_search"]]
            if g["op"] == "created":
                g["id"] = ids[_New("group", g["name"])] = catalog.create_group(lake, g["name"], search)["group_id"]
            elif g["op"] == "updated":
                catalog.update_group(lake, g["id"], person_list_search=search)
        for s in plan["sources"]:
            settings = {**s["settings"], "person_list_add": [real(v) for v in s["settings"]["person_list_add"]]}
            if s["op"] == "created":
                s["id"] = catalog.create_source(lake, s["name"], real(s["group_id"]), **settings)["source_id"]
            elif s["op"] == "updated":
                catalog.update_source(lake, s["id"], **{k: settings[k] for k in s["changed"]})

    labels = _source_labels(plan["sources"])
    summary: dict = {"status": "ok", "dry_run": dry_run}
    for kind, names in (
        ("lists", [x["name"] for x in plan["lists"]]),
        ("groups", [g["name"] for g in plan["groups"]]),
        ("sources", labels),
    ):
        summary[kind] = {
            op: [n for n, x in zip(names, plan[kind], strict=True) if x["op"] == op]
            for op in ("created", "updated", "unchanged")
        }
    summary["ids"] = {
        "lists": {x["name"]: x["id"] for x in plan["lists"]},
        "groups": {g["name"]: g["id"] for g in plan["groups"]},
        "sources": {n: s["id"] for n, s in zip(labels, plan["sources"], strict=True)},
    }
    return summary
