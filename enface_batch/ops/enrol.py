"""Enrolment from a folder-per-person tree or a CSV manifest: person create, many times, with its options.

Folder tree: ROOT/<person name>/<photos>. Each folder becomes one person whose fields start with the folder
name; the photo with the largest face creates it, the folder's other photos are kept as its extra faces
(`person_faces`), so nothing given is thrown away. CSV manifest: columns `image` (path or URI, relative to
the CSV's folder), optional `list` (list name or id; default: the --list-id given), optional `fields`
(strings separated by `|`), optional `person` (rows with the same value are one person, as with folders).
A person already enrolled from the same photo (same content hash) in the same list is not enrolled again.
"""

from __future__ import annotations

import csv
import io
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import imaging
from ..analyze import Analyzer
from ..fsio import FileTooLarge, NotRegularFile, ReadTimedOut, read_capped, url_to_fs
from ..imaging import jpeg_bytes
from ..lake.schemas import DEFAULT_LIST_ID
from ..lake.store import Lake
from . import validate
from .catalog import list_lists, require_lists
from .errors import BadRequest
from .identity import face_row
from .persons import create_person
from .shapes import spent


@dataclass
class Entry:
    """One person to enrol: their photos (best first after analysis), list and fields."""

    key: str
    images: list[str]
    list_id: str
    fields: list[str] = field(default_factory=list)


def _resolve_list(lake: Lake, value: str | None, default: str) -> str:
    if not value:
        return default
    try:
        return require_lists(lake, [value], "list")[0]
    except BadRequest:
        named = [x["list_id"] for x in list_lists(lake) if x["name"] == value]
        if len(named) != 1:
            raise BadRequest(f"list {value!r} is neither a list id nor the name of exactly one list") from None
        return named[0]


def entries_from_tree(root: str, list_id: str) -> list[Entry]:
    fs, base = url_to_fs(root)
    out = []
    for d in sorted(p for p in fs.ls(base, detail=False) if fs.isdir(p)):
        name = d.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        prefix = root[: len(root) - len(root.split("://", 1)[-1])] if "://" in root else ""
        images = list(imaging.list_images([prefix + d if prefix and not d.startswith(prefix) else d]))
        if images:
            out.append(Entry(name, images, list_id, [name]))
    return out


def entries_from_csv(lake: Lake, manifest: str, list_id: str) -> list[Entry]:
    # The manifest is input like any scanned file: a FIFO, a device or a huge file is refused, not read forever.
    try:
        text = read_capped(manifest).decode("utf-8-sig")
    except (NotRegularFile, FileTooLarge, ReadTimedOut, IsADirectoryError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{manifest}: cannot read the manifest: {exc}") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and "image" not in rows[0]:
        raise BadRequest(f"{manifest}: the manifest needs an 'image' column (has {list(rows[0])})")
    folder = manifest.rsplit("/", 1)[0] if "/" in manifest else "."
    grouped: OrderedDict[str, Entry] = OrderedDict()
    for i, row in enumerate(rows, start=2):
        img = (row.get("image") or "").strip()
        if not img:
            raise BadRequest(f"{manifest}, line {i}: empty image")
        if "://" not in img and not img.startswith("/"):
            img = f"{folder}/{img}"
        lid = _resolve_list(lake, (row.get("list") or "").strip(), list_id)
        fields = [f for f in (row.get("fields") or "").split("|") if f]
        key = (row.get("person") or "").strip() or f"row {i}"
        entry = grouped.setdefault(f"{lid}/{key}", Entry(key, [], lid, fields))
        entry.images.append(img)
        entry.fields.extend(f for f in fields if f not in entry.fields)
    return list(grouped.values())


def enrol(
    lake: Lake,
    analyzer: Analyzer,
    source: str,
    *,
    list_id: str | None = None,
    drop_image: bool = False,
    new_person_threshold: str | None = None,
    new_person_yaw_max: int | str = 80,
    new_person_square_min: int | str = 50,
    feature_check=None,
    on_progress: Callable[..., None] | None = None,
) -> dict:
    """Enrol a folder tree or a CSV manifest (by its .csv suffix) into a list.

    ``on_progress(stage, images_done, images_total, faces)`` is called after each person's photos.

    The duplicate check of person create is off by default here (the tree says who is who); pass a
    new_person_threshold (80..95, no_match) to skip faces that already match someone in the list. Yaw and
    square limits default to the loosest the seed allows: a curated enrolment photo is trusted more than a
    camera frame.
    """
    t0 = time.perf_counter()
    lid = require_lists(lake, [list_id or DEFAULT_LIST_ID], "list_id")[0]
    entries = entries_from_csv(lake, source, lid) if source.lower().endswith(".csv") else entries_from_tree(source, lid)
    done = {
        (r["list_id"], r["image_sha256"]) for r in lake.read("persons", columns=["list_id", "image_sha256"]).to_pylist()
    }
    report = {"status": "ok", "persons_created": 0, "extra_faces": 0, "skipped": [], "errors": []}
    total, seen, faces = sum(len(e.images) for e in entries), 0, 0
    if on_progress:
        on_progress("enrol", 0, total, 0)
    for entry in entries:
        results = list(analyzer.analyze_uris(entry.images, features=validate.features(feature_check), multi=False))
        seen, faces = seen + len(results), faces + sum(len(r.faces) for r in results)
        if on_progress:
            on_progress("enrol", seen, total, faces)
        good = [r for r in results if r.faces]
        report["errors"].extend({"image": r.uri, "message": r.error or "no face found"} for r in results if not r.faces)
        if not good:
            continue
        good.sort(key=lambda r: -r.faces[0].area)
        if (entry.list_id, good[0].sha256) in done:
            report["skipped"].append({"person": entry.key, "reason": "already enrolled from this photo"})
            continue
        made = create_person(
            lake,
            analyzer,
            good[0].uri,
            list_id=entry.list_id,
            fields=entry.fields,
            drop_image=drop_image,
            new_person_yaw_max=new_person_yaw_max,
            new_person_square_min=new_person_square_min,
            feature_check=feature_check,
            new_person_threshold=new_person_threshold or "no_match",
            duplicate_check=new_person_threshold is not None,
        )
        person = made["persons"][0] if made["persons"] else {}
        if not person.get("created"):
            report["skipped"].append({"person": entry.key, "reason": person.get("reason", made["message"])})
            continue
        report["persons_created"] += 1
        extra = [
            face_row(
                person_id=person["person_id"],
                list_id=entry.list_id,
                embedding=r.faces[0].embedding,
                image_sha256=r.sha256,
                face_index=r.faces[0].index,
                how="enrolled",
                image_uri=None if drop_image else r.uri,
                thumb=None if drop_image else jpeg_bytes(r.faces[0].thumb),
            )
            for r in good[1:]
        ]
        if extra:
            lake.upsert("person_faces", extra, keys=["list_id", "face_id"])
            report["extra_faces"] += len(extra)
    report["spent"] = spent(t0)
    return report
