"""Response shaping shared by the operations: the seed's JSON shapes (a face, an image, a person record) and
its conventions (`spent` in ms, UTC times as ISO 8601 with "Z"), so the CLI and the endpoint answer alike.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the catalog and persons reads use this module without loading OpenCV or onnxruntime
    from ..analyze import Face, ImageResult


def face_json(
    face: Face, *, bbox: bool = False, bbox_pro: bool = False, thumb: bool = False, features: bool = True
) -> dict:
    # `score` is the detector's confidence here but the Enface % in matches and /compare: the seed's name stays,
    # and `det_score` says which one it is (as the faces table and `detect --out` name it).
    det = round(face.det_score, 4)
    out: dict = {"face": face.index, "score": det, "det_score": det, "square": face.square, "yaw": face.yaw}
    if bbox:
        out["bbox"] = [round(v) for v in face.bbox]
    if bbox_pro:
        out["bbox_pro"] = [[round(x), round(y)] for x, y in face.bbox_pro]
    if thumb:
        from ..imaging import thumb_b64  # imported here: see TYPE_CHECKING above

        out["thumb"] = thumb_b64(face.thumb)
    if features and face.features:
        feats = dict(face.features)
        if "age" in feats:
            from ..models.attributes import age_bin

            feats["age"] = round(feats["age"], 1)
            feats.setdefault("age_bin", age_bin(feats["age"]))
        if "gender_score" in feats:
            feats["gender_score"] = round(feats["gender_score"], 3)
        out["features"] = feats
    return out


def image_json(res: ImageResult, **shape: bool) -> dict:
    """One image of a /detect response: its faces, or its error."""
    if res.error:
        return error_image(res)
    return {
        "image": res.uri,
        "status": res.status,
        "width": res.width,
        "height": res.height,
        "faces": [face_json(f, **shape) for f in res.faces],
    }


def error_image(res: ImageResult) -> dict:
    """An image that could not be read, in a /detect or /action response: the reason and the message."""
    return {"image": res.uri, "status": "error", "reason": res.reason, "message": res.error, "faces": []}


def spent(t0: float) -> int:
    """Milliseconds since t0 (a time.perf_counter() value): the seed's `spent`."""
    return round((time.perf_counter() - t0) * 1000)


def iso(value: datetime | object) -> str | object:
    """A time as ISO 8601 with "Z" for UTC; anything else (None, a string) as it is."""
    return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else value


def iso_row(row: dict) -> dict:
    """A row with its times as ISO 8601 strings."""
    return {k: iso(v) for k, v in row.items()}


def features_json(features: str | None) -> list[dict]:
    """A person's stored features (a JSON object) as the seed's list of name/value pairs, by name."""
    return [{"name": k, "value": v} for k, v in sorted(json.loads(features or "{}").items())]


def person_json(row: dict, *, detail: bool = False) -> dict:
    """A person record from a persons row read with `has_image` (ops.persons.person_rows): the seed's /person
    record, or with detail (the browse routes) also its update time and face size."""
    out = {"person_id": row["person_id"], "list_id": row["list_id"], "created": iso(row["created"])}
    if detail:
        out["updated"] = iso(row["updated"])
    out.update(
        group_id=row["group_id"],
        source_id=row["source_id"],
        status=row["status"],
        features=features_json(row["features"]),
        fields=list(row["fields"] or []),
        yaw=row["yaw"],
    )
    if detail:
        out["square"] = row["square"]
    out["image"] = row["has_image"]
    return out
