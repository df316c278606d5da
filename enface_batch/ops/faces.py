"""The seed's JSON shape of one face, shared by detect, compare, person create and action."""

from __future__ import annotations

from ..analyze import Face
from ..imaging import thumb_b64
from ..models.attributes import age_bin


def face_json(
    face: Face, *, bbox: bool = False, bbox_pro: bool = False, thumb: bool = False, features: bool = True
) -> dict:
    out: dict = {"face": face.index, "score": round(face.det_score, 4), "square": face.square, "yaw": face.yaw}
    if bbox:
        out["bbox"] = [round(v) for v in face.bbox]
    if bbox_pro:
        out["bbox_pro"] = [[round(x), round(y)] for x, y in face.bbox_pro]
    if thumb:
        out["thumb"] = thumb_b64(face.thumb)
    if features and face.features:
        feats = dict(face.features)
        if "age" in feats:
            feats["age"] = round(feats["age"], 1)
            feats["age_bin"] = age_bin(feats["age"])
        if "gender_score" in feats:
            feats["gender_score"] = round(feats["gender_score"], 3)
        out["features"] = feats
    return out
