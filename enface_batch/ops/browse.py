"""Read helpers for people who would rather look than read: pages of a list's persons with thumbs, a person's
faces with the images they came from and the photos they were matched in, and the images of a source.

Beyond the seed. Every function only reads (a ReadLake: a Lake or a reader Snapshot), and returns JSON-ready dicts.
"""

from __future__ import annotations

import base64
import re

from ..lake.protocols import ReadLake
from ..scoring import DEFAULT_EMBEDDER, calibration_for
from .catalog import get_source, require_lists
from .errors import BadRequest
from .identity import photos_of
from .persons import person_record, person_rows
from .shapes import iso, person_json

MAX_PAGE = 500
IMAGE_STATUSES = ("faces", "no_faces", "error")


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data else None


def page(offset: object, limit: object) -> tuple[int, int]:
    try:
        o, n = int(str(offset)), int(str(limit))
    except ValueError:
        raise BadRequest(f"offset and limit must be integers, got {offset!r}, {limit!r}") from None
    if o < 0 or not 1 <= n <= MAX_PAGE:
        raise BadRequest(f"offset must be >= 0 and limit from 1 to {MAX_PAGE}")
    return o, n


def _thumbs(lake: ReadLake, table: str, where: dict, key: str) -> dict[str, str | None]:
    rows = lake.read(table, where=where, columns=[key, "thumb"])
    return {k: _b64(t) for k, t in zip(rows[key].to_pylist(), rows["thumb"].to_pylist(), strict=True)}


SORTS = ("photos", "created")


def display_name(fields: list[str] | None, person_id: str) -> str:
    """What a person is called on screen: its first non-empty field (enrolment puts the name there), or else
    "person " and the first 8 characters of its id."""
    return next((f.strip() for f in fields or [] if f and f.strip()), f"person {person_id[:8]}")


def list_persons(
    lake: ReadLake, list_id: str, *, offset: object = 0, limit: object = 50, thumbs: bool = True, sort: str = "photos"
) -> dict:
    """A page of a list's persons, each with its name, fields, number of faces and photos, and thumb.

    sort="photos": most photos first, then newest; sort="created": oldest first. Both need every person's
    counts before paging, read from the light columns of person_faces.
    """
    if sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    lid = require_lists(lake, [list_id], "list_id")[0]
    o, n = page(offset, limit)
    name = lake.read("person_lists", where={"list_id": lid}, columns=["name"])["name"][0].as_py()
    rows = person_rows(lake, {"list_id": lid})
    pf = lake.read("person_faces", where={"list_id": lid}, columns=["person_id", "image_sha256"])
    counts: dict[str, int] = {}
    for p in pf["person_id"].to_pylist():
        counts[p] = counts.get(p, 0) + 1
    photos = _distinct_photos(pf)
    # a person without face rows (made before person_faces, or a crash between two commits) has its own face
    faces_of = {r["person_id"]: counts.get(r["person_id"], 1) for r in rows}
    photos_of = {r["person_id"]: photos.get(r["person_id"], 1) for r in rows}
    if sort == "photos":
        rows.sort(key=lambda r: (r["created"], r["person_id"]), reverse=True)  # newest first among equals
        rows.sort(key=lambda r: photos_of[r["person_id"]], reverse=True)  # stable: keeps that order
    else:
        rows.sort(key=lambda r: (r["created"], r["person_id"]))
    chosen = rows[o : o + n]
    ids = [r["person_id"] for r in chosen]
    thumb = _thumbs(lake, "persons", {"list_id": lid, "person_id": ids}, "person_id") if thumbs and ids else {}
    persons = [
        {
            **person_json(r, detail=True),
            "name": display_name(r["fields"], r["person_id"]),
            "faces": faces_of[r["person_id"]],
            "photos": photos_of[r["person_id"]],
            "thumb": thumb.get(r["person_id"]),
        }
        for r in chosen
    ]
    return {
        "status": "ok",
        "list_id": lid,
        "name": name,
        "sort": sort,
        "total": len(rows),
        "offset": o,
        "limit": n,
        "persons": persons,
    }


def person_photos(
    lake: ReadLake, person_id: str, list_id: str, *, offset: object = 0, limit: object = 50, thumbs: bool = True
) -> dict:
    """A page of every photo a person is in (identity.photos_of: each of its faces, newest first), each with
    the face's thumb, how it came to the person and its match score, the photo's size and where it was seen
    (relative to its source), and whether /browse/images can serve it."""
    r = person_record(lake, person_id, list_id)
    pid, lid = r["person_id"], r["list_id"]
    o, n = page(offset, limit)
    rows = list(reversed(photos_of(lake, pid, lid)))
    chosen = rows[o : o + n]
    roots = source_roots(lake)
    images = _images_by_sha(lake, [p["image_sha256"] for p in chosen], roots)
    keys = [(p["image_sha256"], p["face_index"]) for p in chosen]
    boxes = _boxes(lake, keys)
    face_thumbs: dict[tuple, str | None] = {}
    if thumbs and chosen:
        t = lake.read(
            "person_faces", where={"person_id": pid, "list_id": lid}, columns=["image_sha256", "face_index", "thumb"]
        )
        for sha, idx, th in zip(*(t[c].to_pylist() for c in ("image_sha256", "face_index", "thumb")), strict=True):
            face_thumbs[(sha, idx)] = _b64(th)
    photos = []
    for p, key in zip(chosen, keys, strict=True):
        root = roots.get(p["source_id"]) if p["source_id"] else None
        photos.append(
            {
                "image_sha256": p["image_sha256"],
                "face_index": p["face_index"],
                "how": p["how"],
                "score": p["score"],
                "added": p["added"],
                "source_id": p["source_id"],
                "paths": [display_path(x, root) for x in p["paths"]],
                "image": images.get(p["image_sha256"]),
                "bbox": boxes.get(key),
                **({"thumb": face_thumbs.get(key)} if thumbs else {}),
            }
        )
    return {
        "status": "ok",
        "person_id": pid,
        "list_id": lid,
        "name": display_name(r["fields"], pid),
        "total": len(rows),
        "offset": o,
        "limit": n,
        "photos": photos,
    }


def source_roots(lake: ReadLake) -> dict[str, str | None]:
    """Each source's folder or URI, by source id."""
    rows = lake.read("sources", columns=["source_id", "uri"]).to_pylist()
    return {r["source_id"]: r["uri"] for r in rows}


def _shown_key(key: str | None, root: str | None) -> str | None:
    if key and key.startswith("unreadable:"):
        return "unreadable:" + (display_path(key[len("unreadable:") :], root) or "")
    return key


def _no_server_paths(message: str | None) -> str | None:
    """Any absolute path left in a message (a link's target, say) as its file name only."""
    return message and re.sub(r"(?<![\w.:])/(?:[^\s'\"/]+/)+([^\s'\"/]*)", r"\1", message)


def display_path(uri: str | None, root: str | None) -> str | None:
    """A recorded location as clients see it: relative to its source's uri (clients get the source id
    beside it), or only the file name when it lies under no source (files enrolled by name). Absolute server
    paths and bucket names are not shown: they tell a reader of the API how the server is laid out."""
    if not uri or uri.startswith("<"):
        return uri
    if root:
        base = root.rstrip("/")
        if uri.startswith(base + "/"):
            return uri[len(base) + 1 :]
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _distinct_photos(pf) -> dict[str, int]:
    seen: dict[str, set] = {}
    for p, sha in zip(pf["person_id"].to_pylist(), pf["image_sha256"].to_pylist(), strict=True):
        seen.setdefault(p, set()).add(sha)
    return {p: len(s) for p, s in seen.items()}


def _images_by_sha(lake: ReadLake, shas: list[str], roots: dict[str, str | None]) -> dict[str, dict]:
    shas = sorted({s for s in shas if s})
    if not shas:
        return {}
    cols = ["image_sha256", "uri", "source_id", "width", "height", "format", "status", "faces", "scanned"]
    out: dict[str, dict] = {}
    for r in lake.read("images", where={"image_sha256": shas}, columns=cols).to_pylist():
        uri = display_path(r["uri"], roots.get(r["source_id"]))
        out.setdefault(r["image_sha256"], {**r, "uri": uri, "scanned": iso(r["scanned"])})
    return out


def _embedder_of(model: str | None) -> str:
    m = re.search(r"embedder=([^,]+)", model or "")
    return m.group(1) if m else DEFAULT_EMBEDDER


def _min_score(value: object, model: str | None) -> float:
    cal = calibration_for(_embedder_of(model))
    if value in (None, "", "no_match"):
        return cal.no_match
    try:
        v = float(str(value))
    except ValueError:
        raise BadRequest(f"min_score must be a score in % or no_match, got {value!r}") from None
    if not 0 <= v <= 100:
        raise BadRequest(f"min_score must be from 0 to 100, got {value!r}")
    return v


def person_detail(
    lake: ReadLake,
    person_id: str,
    list_id: str | None = None,
    *,
    thumbs: bool = True,
    appearances: object = 50,
    min_score: object = None,
) -> dict:
    """A person with all its faces (person_faces: the face that made it, faces scans matched to it, enrolled
    and merged ones), each with the image it came from; and the scanned photos it is in, newest first."""
    r = person_record(lake, person_id, list_id)
    pid, lid = r["person_id"], r["list_id"]
    n_appear = 0 if str(appearances) == "0" else page(0, appearances)[1]
    roots = source_roots(lake)
    cols = ["face_id", "image_uri", "image_sha256", "face_index", "from_person_id", "added", "how", "score"]
    rows = lake.read("person_faces", where={"person_id": pid, "list_id": lid}, columns=[*cols, "source_id"])
    rows = sorted(rows.to_pylist(), key=lambda f: (f["added"], f["face_id"]))
    boxes = _boxes(lake, [(f["image_sha256"], f["face_index"]) for f in rows])
    faces = [
        {
            **f,
            "image_uri": display_path(f["image_uri"], roots.get(f["source_id"])),
            "kind": f.pop("how"),
            "score": None if f["score"] is None else round(float(f["score"]), 2),
            "bbox": boxes.get((f["image_sha256"], f["face_index"])),
            "added": iso(f["added"]),
        }
        for f in rows
    ]
    if thumbs:
        more = _thumbs(lake, "person_faces", {"person_id": pid, "list_id": lid}, "face_id") if rows else {}
        for f in faces:
            f["thumb"] = more.get(f["face_id"])
        main = lake.read("persons", where={"person_id": pid, "list_id": lid}, columns=["thumb", "image"]).to_pylist()
        out_thumb, out_crop = (_b64(main[0]["thumb"]), _b64(main[0]["image"])) if main else (None, None)
        for f in faces:  # the person's own image is the crop of the face it was made from
            if (f["image_sha256"], f["face_index"]) == (r["image_sha256"], r["face_index"]):
                f["crop"] = out_crop
    images = _images_by_sha(lake, [f["image_sha256"] for f in faces], roots)
    for f in faces:
        f["image"] = images.get(f["image_sha256"])
    out = {"status": "ok", **person_json(r, detail=True), "name": display_name(r["fields"], pid), "faces": faces}
    if thumbs:
        out.update(thumb=out_thumb, crop=out_crop)
    if n_appear:
        out["min_score"] = _min_score(min_score, r["model"])
        out["appearances"] = appearances_of(lake, pid, lid, limit=n_appear, min_score=out["min_score"])
    return out


def _boxes(lake: ReadLake, keys: list[tuple[str | None, int | None]]) -> dict[tuple[str, int], list[float]]:
    shas = sorted({s for s, _ in keys if s})
    if not shas:
        return {}
    t = lake.read("faces", where={"image_sha256": shas}, columns=["image_sha256", "face_index", "bbox"])
    want = set(keys)
    return {
        (s, i): b
        for s, i, b in zip(
            t["image_sha256"].to_pylist(), t["face_index"].to_pylist(), t["bbox"].to_pylist(), strict=True
        )
        if (s, i) in want
    }


def appearances_of(lake: ReadLake, person_id: str, list_id: str, *, limit: int, min_score: float) -> list[dict]:
    """The scanned photos a person is in (its person_faces rows that came from a source), newest first;
    faces matched to it count when they scored at least min_score."""
    cols = ["action_id", "added", "source_id", "image_sha256", "image_uri", "face_index", "score", "how"]
    rows = lake.read("person_faces", where={"person_id": person_id, "list_id": list_id}, columns=cols).to_pylist()
    rows = [a for a in rows if a["source_id"] and a["image_sha256"] and (a["score"] is None or a["score"] >= min_score)]
    rows = sorted(rows, key=lambda a: (a["added"], a["image_sha256"]), reverse=True)[:limit]
    roots = source_roots(lake)
    images = _images_by_sha(lake, [a["image_sha256"] for a in rows], roots)
    boxes = _boxes(lake, [(a["image_sha256"], a["face_index"]) for a in rows])
    return [
        {
            **a,
            "image_uri": display_path(a["image_uri"], roots.get(a["source_id"])),
            "created": iso(a.pop("added")),
            "score": None if a["score"] is None else round(float(a["score"]), 2),
            "bbox": boxes.get((a["image_sha256"], a["face_index"])),
            "image": images.get(a["image_sha256"]),
        }
        for a in rows
    ]


def source_images(
    lake: ReadLake, source_id: str, *, offset: object = 0, limit: object = 50, status: str | None = None
) -> dict:
    """A page of a source's scanned images (by uri), each with its faces (box, pose, gender, age)."""
    src = get_source(lake, source_id)
    o, n = page(offset, limit)
    where: dict = {"source_id": src["source_id"]}
    if status:
        if status not in IMAGE_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(IMAGE_STATUSES)}, got {status!r}")
        where["status"] = status
    cols = ["image_sha256", "uri", "width", "height", "format", "status", "reason", "message", "faces", "scanned"]
    table = lake.read("images", where=where, columns=cols)
    rows = sorted(table.to_pylist(), key=lambda r: (r["uri"] or "", r["image_sha256"] or ""))
    chosen = rows[o : o + n]
    shas = [r["image_sha256"] for r in chosen if r["image_sha256"]]
    faces: dict[str, list[dict]] = {}
    if shas:
        fcols = ["image_sha256", "face_index", "bbox", "det_score", "square", "yaw", "pitch", "roll", "gender", "age"]
        ft = lake.read("faces", where={"image_sha256": shas, "source_id": src["source_id"]}, columns=fcols)
        seen = set()
        for f in sorted(ft.to_pylist(), key=lambda f: (f["image_sha256"], f["face_index"])):
            if (f["image_sha256"], f["face_index"]) in seen:
                continue
            seen.add((f["image_sha256"], f["face_index"]))
            faces.setdefault(f.pop("image_sha256"), []).append(f)
    return {
        "status": "ok",
        "source_id": src["source_id"],
        "name": src["name"],
        "total": len(rows),
        "offset": o,
        "limit": n,
        "images": [
            {
                **r,
                "uri": display_path(r["uri"], src["uri"]),
                # a file never read has a key, not a hash: "unreadable:<its uri>", shown without the server path
                "image_sha256": _shown_key(r["image_sha256"], src["uri"]),
                "message": _no_server_paths(
                    r["message"] and r["message"].replace(r["uri"] or "\0", display_path(r["uri"], src["uri"]))
                ),
                "scanned": iso(r["scanned"]),
                "face_list": faces.get(r["image_sha256"], []),
            }
            for r in chosen
        ],
    }


def image_locations(lake: ReadLake, sha256: str) -> list[dict]:
    """Every recorded location of the image with this content hash, each with the folder of the source it
    was scanned under (None for files enrolled by name): images, files (copies, renames), then the faces of
    persons. Served only after checks (api/images.py): the file there may have changed or be something else."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise BadRequest(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    roots = source_roots(lake)
    out: list[dict] = []
    seen: set[tuple[str, str | None]] = set()
    for table, col, has_source in (
        ("images", "uri", True),
        ("files", "uri", True),
        ("persons", "image_uri", True),
        ("person_faces", "image_uri", False),
    ):
        key = "image_sha256" if table != "files" else "sha256"
        cols = [col, "source_id"] if has_source else [col]
        for r in lake.read(table, where={key: sha256}, columns=cols).to_pylist():
            uri, sid = r[col], r.get("source_id")
            if not uri or uri.startswith("<") or (uri, sid) in seen:
                continue
            seen.add((uri, sid))
            root = roots.get(sid) if sid else None
            out.append({"uri": uri, "root": root, "source_id": sid})
    return out
