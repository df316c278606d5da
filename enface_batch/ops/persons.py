"""Persons: create from an image, get, update (fields, drop_image), delete; the seed's /person* semantics."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..analyze import Analyzer, ImageResult
from ..imaging import ImageError, decode
from ..lake.protocols import ReadLake
from ..lake.schemas import DEFAULT_LIST_ID
from ..lake.store import Lake, now
from ..settings import get_settings
from . import validate
from .action import ActionEngine, person_row
from .catalog import require_lists
from .errors import BadRequest, NotFound
from .identity import face_id, face_row, photos_of
from .shapes import face_json, iso, person_json, spent


def analyze_one(analyzer: Analyzer, image: str | bytes, *, features: list[str], multi: bool) -> ImageResult:
    """One image given as a path/URI or as uploaded bytes; an unreadable image is a 400 naming the reason."""
    if isinstance(image, bytes):
        try:
            decoded = decode(image, "<upload>", max_side=get_settings().decode_max_side)
        except ImageError as exc:
            raise BadRequest(str(exc)) from exc
        return analyzer.analyze_images([decoded], features=features, multi=multi)[0]
    res = next(iter(analyzer.analyze_uris([image], features=features, multi=multi)))
    if res.error:
        raise BadRequest(res.error)
    return res


# The persons columns but the heavy ones (embedding, image, thumb): enough for a record or a page of them.
PERSON_LIGHT = [
    "person_id",
    "list_id",
    "created",
    "updated",
    "source_id",
    "group_id",
    "status",
    "fields",
    "features",
    "yaw",
    "square",
    "bbox",
    "image_uri",
    "image_sha256",
    "face_index",
    "model",
]


def person_rows(lake: ReadLake, where: dict) -> list[dict]:
    """Persons rows without their heavy columns, each with has_image and has_thumb."""
    if lake.light_columns:  # a reader Snapshot knows which rows have an image without reading them
        rows = lake.read("persons", where=where, columns=[*PERSON_LIGHT, "__has_image", "__has_thumb"]).to_pylist()
        for r in rows:
            r["has_image"], r["has_thumb"] = r.pop("__has_image"), r.pop("__has_thumb")
        return rows
    rows = lake.read("persons", where=where, columns=[*PERSON_LIGHT, "image", "thumb"]).to_pylist()
    for r in rows:
        r["has_image"], r["has_thumb"] = r.pop("image") is not None, r.pop("thumb") is not None
    return rows


def _person(lake: ReadLake, person_id: str, list_id: str | None, *, light: bool = False) -> dict:
    """One person's row (all columns; light: those of person_rows), or NotFound."""
    pid = validate.uuid_str(person_id, "person_id")
    lid = validate.uuid_str(list_id, "list_id") if list_id else DEFAULT_LIST_ID
    where = {"person_id": pid, "list_id": lid}
    rows = person_rows(lake, where) if light else lake.read("persons", where=where).to_pylist()
    if not rows:
        raise NotFound(f"person {pid} not found in list {lid}")
    return rows[0]


def person_record(lake: ReadLake, person_id: str, list_id: str | None = None) -> dict:
    """One person's light row (see person_rows), in the default list unless list_id is given; or NotFound."""
    return _person(lake, person_id, list_id, light=True)


def create_person(
    lake: Lake,
    analyzer: Analyzer,
    image: str | bytes,
    *,
    list_id: str | None = None,
    replace_person_id: str | None = None,
    fields: Iterable[str] | None = None,
    multi: bool = False,
    drop_image: bool = False,
    new_person_threshold: str = "no_match",
    new_person_yaw_max: int | str = 30,
    new_person_square_min: int | str = 112,
    feature_check: Iterable[str] | str | None = None,
    bbox: bool = False,
    bbox_pro: bool = False,
    thumb: bool = False,
    duplicate_check: bool = True,
) -> dict:
    """Create a person per face (the largest only unless multi) in a list.

    new_person_threshold is a duplicate check: a face that already scores at least that much against a person
    of the list creates nothing and reports the match. With replace_person_id the largest face replaces that
    person's face (its id, creation time and, unless new ones are given, its fields are kept).
    """
    t0 = time.perf_counter()
    lid = require_lists(lake, [list_id or DEFAULT_LIST_ID], "list_id")[0]
    threshold = validate.threshold(new_person_threshold)
    yaw_max = validate.angle(new_person_yaw_max)
    square_min = validate.square(new_person_square_min)
    feats = validate.features(feature_check)
    new_fields = validate.fields(fields) if fields is not None else None
    replaced = _person(lake, replace_person_id, lid) if replace_person_id else None
    res = analyze_one(analyzer, image, features=feats, multi=multi and replaced is None)
    engine = ActionEngine(lake, analyzer)
    cal, searcher = engine.calibration, engine.searcher
    thr = cal.threshold(threshold)
    exclude = {replaced["person_id"]} if replaced else set()
    persons, staged, faces = [], [], []
    for face in res.faces:
        entry = face_json(face, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb)
        q = face.embedding[None, :]
        best = searcher.search([lid], q, 1, exclude=exclude)[0]
        best_score = round(float(cal.score(best[0][2])), 2) if best else None
        if thr is None:
            entry.update(created=False, reason="new_person_threshold is never")
        elif duplicate_check and best and best_score >= thr:
            entry.update(
                created=False,
                reason="already in the list",
                match={"person_id": best[0][0], "list_id": lid, "score": best_score},
            )
        elif face.square < square_min:
            entry.update(created=False, reason=f"face square {face.square:g} px < new_person_square_min {square_min}")
        elif abs(face.yaw) > yaw_max:
            entry.update(created=False, reason=f"face yaw {face.yaw:g} deg > new_person_yaw_max {yaw_max}")
        else:
            row = person_row(
                face,
                res,
                list_id=lid,
                source_id=None,
                group_id=None,
                drop_image=drop_image,
                model=engine.model,
                fields=new_fields or [],
                person_id=replaced["person_id"] if replaced else None,
            )
            if replaced:
                row.update(
                    created=replaced["created"],
                    source_id=replaced["source_id"],
                    group_id=replaced["group_id"],
                    status=replaced["status"],
                    fields=new_fields if new_fields is not None else replaced["fields"],
                )
            staged.append(row)
            faces.append(
                face_row(
                    person_id=row["person_id"],
                    list_id=lid,
                    embedding=face.embedding,
                    image_sha256=res.sha256,
                    face_index=face.index,
                    how="replaced" if replaced else "enrolled",
                    image_uri=row["image_uri"],
                    thumb=row["thumb"],
                )
            )
            exclude.add(row["person_id"])
            entry.update(created=True, person_id=row["person_id"], list_id=lid)
        persons.append(entry)
    if staged and replaced:
        # The new photo takes the place of the face the person was made from (its other faces stay); the old
        # face row goes first, so a crash in between leaves the person with fewer faces, never a stale one.
        old_face = face_id(lid, replaced["image_sha256"], replaced["face_index"])
        lake.delete("person_faces", {"list_id": lid, "face_id": old_face})
        lake.upsert("persons", staged, keys=["person_id", "list_id"])
    elif staged:
        lake.append("persons", staged)
    if faces:
        lake.upsert("person_faces", faces, keys=["list_id", "face_id"])
    n_created = sum(p["created"] for p in persons)
    verb = "replaced" if replaced else "created"
    message = f"{n_created} person(s) {verb}" if res.faces else "no faces found"
    return {"status": "ok", "message": message, "faces_total": len(res.faces), "persons": persons, "spent": spent(t0)}


def get_person(lake: ReadLake, person_id: str, list_id: str | None = None) -> dict:
    """The seed's /person record (read from the light columns: the CLI's and the endpoint's one path)."""
    return person_json(person_record(lake, person_id, list_id))


def person_photos(lake: ReadLake, person_id: str, list_id: str | None = None) -> dict:
    """The photos a person is in (its person_faces rows with the files that hold each photo)."""
    row = _person(lake, person_id, list_id)
    photos = photos_of(lake, row["person_id"], row["list_id"])
    return {
        "status": "ok",
        "person_id": row["person_id"],
        "list_id": row["list_id"],
        "fields": list(row["fields"] or []),
        "faces_total": len(photos),
        "photos_total": len({p["image_sha256"] for p in photos}),
        "photos": photos,
    }


def persons_of(lake: ReadLake, list_id: str | None = None) -> list[dict]:
    """A list's persons with how many photos and faces each is in, most photos first (then newest): the
    analyst's "who is in this archive" without SQL. Beyond the seed."""
    lid = require_lists(lake, [validate.uuid_str(list_id, "list_id") if list_id else DEFAULT_LIST_ID], "list_id")[0]
    pf = lake.read("person_faces", where={"list_id": lid}, columns=["person_id", "image_sha256"]).to_pylist()
    photos: dict[str, set] = {}
    faces: dict[str, int] = {}
    cols = ["person_id", "fields", "status", "source_id", "created", "updated"]  # not the images
    for r in pf:
        faces[r["person_id"]] = faces.get(r["person_id"], 0) + 1
        if r["image_sha256"]:
            photos.setdefault(r["person_id"], set()).add(r["image_sha256"])
    out = [
        {
            "person_id": r["person_id"],
            "list_id": lid,
            "fields": list(r["fields"] or []),
            "photos": len(photos.get(r["person_id"], ())),
            "faces": faces.get(r["person_id"], 0),
            "status": r["status"],
            "source_id": r["source_id"],
            "created": iso(r["created"]),
            "updated": iso(r["updated"]),
        }
        for r in lake.read("persons", where={"list_id": lid}, columns=cols).to_pylist()
    ]
    out.sort(key=lambda r: r["person_id"])
    out.sort(key=lambda r: r["created"] or "", reverse=True)
    out.sort(key=lambda r: r["photos"], reverse=True)  # stable: photos, then newest, then id
    return out


def update_person(
    lake: Lake,
    person_id: str,
    *,
    list_id: str | None = None,
    fields: Iterable[str] | None = None,
    drop_image: bool = False,
) -> dict:
    row = _person(lake, person_id, list_id)
    if fields is not None:
        row["fields"] = validate.fields(fields)
    if drop_image:
        row.update(image=None, thumb=None, image_uri=None)
    row["updated"] = now()
    lake.upsert("persons", [row], keys=["person_id", "list_id"], insert=False)
    return {"status": "ok", "message": "operation succeeded"}


def delete_person(lake: Lake, person_id: str, *, list_id: str | None = None) -> dict:
    """The person and its face rows (faces first: a crash in between leaves a person without faces, never
    faces of a person who is gone); its faces then belong to nobody in the list."""
    row = _person(lake, person_id, list_id)
    lake.delete("person_faces", {"person_id": row["person_id"], "list_id": row["list_id"]})
    lake.delete("persons", {"person_id": row["person_id"], "list_id": row["list_id"]})
    return {"status": "ok", "message": "1 person(s) deleted"}
