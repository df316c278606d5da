"""/detect, /compare and a search-only /action over uploaded image bytes (the endpoint's inputs).

Same response shapes as ops.detect and ops.action, which take paths; nothing here writes to the lake.
"""

from __future__ import annotations

import time

import numpy as np

from ..analyze import Analyzer, FeatureUnavailable, ImageResult, check_features
from ..imaging import DecodedImage, ImageError, decode
from ..scoring import calibration_for
from ..settings import get_settings
from . import validate
from .action import ActionEngine, resolve_rules
from .detect import image_json
from .errors import BadRequest
from .faces import face_json

SEARCH_ONLY = (
    "this endpoint is read-only: /action searches and creates no persons. Persons are created by the scan flow "
    "(`enface run`) or the CLI (`enface action`, `enface person create`, `enface enrol`); leave out "
    "person_list_add and new_person_threshold (or send new_person_threshold=never)"
)


def _spent(t0: float) -> int:
    return round((time.perf_counter() - t0) * 1000)


def decode_upload(name: str, data: bytes) -> DecodedImage | ImageResult:
    """Decoded pixels, or an error result naming the upload and the reason (corrupt, truncated, ...)."""
    try:
        return decode(data, name, max_side=get_settings().decode_max_side)
    except ImageError as exc:
        return ImageResult(name, sha256=exc.sha256, error=str(exc), reason=exc.reason)


def _features(analyzer: Analyzer, features) -> list[str]:
    try:
        return check_features(validate.features(features), analyzer.pack)
    except FeatureUnavailable as exc:
        raise BadRequest(str(exc)) from exc


def analyze_uploads(
    analyzer: Analyzer, uploads: list[tuple[str, bytes]], *, features: list[str], multi: bool
) -> list[ImageResult]:
    """One result per upload, in order; undecodable uploads carry their error."""
    items = [decode_upload(name, data) for name, data in uploads]
    done = iter(
        analyzer.analyze_images([x for x in items if isinstance(x, DecodedImage)], features=features, multi=multi)
    )
    return [next(done) if isinstance(x, DecodedImage) else x for x in items]


def detect_uploads(
    analyzer: Analyzer,
    uploads: list[tuple[str, bytes]],
    *,
    features=None,
    multi: bool = False,
    bbox: bool = False,
    bbox_pro: bool = False,
    thumb: bool = False,
) -> dict:
    """The seed's /detect: one entry per image. A bad image is an entry with status error; when every image
    is bad the request is a 400."""
    t0 = time.perf_counter()
    results = analyze_uploads(analyzer, uploads, features=_features(analyzer, features), multi=multi)
    if all(r.error for r in results):
        raise BadRequest("; ".join(r.error for r in results))
    shape = {"bbox": bbox, "bbox_pro": bbox_pro, "thumb": thumb}
    return {"status": "ok", "spent": _spent(t0), "results": [image_json(r, **shape) for r in results]}


def compare_uploads(
    analyzer: Analyzer,
    uploads: list[tuple[str, bytes]],
    *,
    multi: bool = False,
    bbox: bool = False,
    bbox_pro: bool = False,
    thumb: bool = False,
) -> dict:
    """The seed's /compare over two uploads (as ops.detect.compare); a bad image is a 400."""
    t0 = time.perf_counter()
    if len(uploads) != 2:
        raise BadRequest(f"compare takes exactly 2 images, got {len(uploads)}")
    r1, r2 = analyze_uploads(analyzer, uploads, features=[], multi=multi)
    errors = [r.error for r in (r1, r2) if r.error]
    if errors:
        raise BadRequest("; ".join(errors))
    shape = {"bbox": bbox, "bbox_pro": bbox_pro, "thumb": thumb}
    out: dict = {"status": "ok", "image1": [face_json(f, **shape) for f in r1.faces], "score": None}
    out["image2"] = [face_json(f, **shape) for f in r2.faces]
    if r1.faces and r2.faces:
        cal = calibration_for(analyzer.pack.models["embedder"])
        sims = np.stack([f.embedding for f in r1.faces]) @ np.stack([f.embedding for f in r2.faces]).T
        scores = cal.score(sims)
        for i, face in enumerate(out["image1"]):
            face["matches"] = [
                {"face": int(j), "score": round(float(scores[i, j]), 2), "similarity": round(float(sims[i, j]), 4)}
                for j in np.argsort(-scores[i])
            ]
        out["score"] = round(float(scores.max()), 2)
    out["spent"] = _spent(t0)
    return out


def asks_for_creation(new_person_threshold: object, person_list_add: object) -> bool:
    """Whether /action parameters ask for persons to be created (which the read-only endpoint refuses)."""
    adds = [person_list_add] if isinstance(person_list_add, str) else list(person_list_add or [])
    return (new_person_threshold not in (None, "", "never")) or any(str(a).strip() for a in adds)


def search_upload(
    lake,
    analyzer: Analyzer,
    searcher,
    upload: tuple[str, bytes],
    *,
    results: object = 1,
    multi: bool = False,
    bbox: bool = False,
    bbox_pro: bool = False,
    thumb: bool = False,
    group_id: str | None = None,
    source_id: str | None = None,
    person_list_search=None,
    feature_check=None,
    new_person_threshold: str | None = None,
    person_list_add=None,
) -> dict:
    """/action as a search: each face's best `results` matches in the group's (or the given) person lists.

    The rules resolve as in ops.action (request, then source, then group, then defaults), with
    new_person_threshold forced to "never": nothing is created and no action row is written. A request that
    asks for creation is a 400 saying where persons are created.
    """
    t0 = time.perf_counter()
    if asks_for_creation(new_person_threshold, person_list_add):
        raise BadRequest(SEARCH_ONLY)
    k = validate.results(results)
    engine = ActionEngine(lake, analyzer, searcher=searcher, assign=False)
    rules = resolve_rules(
        lake,
        engine.calibration,
        group_id=group_id or None,
        source_id=source_id or None,
        person_list_search=person_list_search or None,
        new_person_threshold="never",
        feature_check=feature_check or None,
    )
    (res,) = analyze_uploads(analyzer, [upload], features=_features(analyzer, rules.feature_check), multi=multi)
    if res.error:
        raise BadRequest(res.error)
    shape = {"bbox": bbox, "bbox_pro": bbox_pro, "thumb": thumb}
    outcomes = engine.process(res, rules, results=k, drop_image=True)
    faces = [{**face_json(f, **shape), **o} for f, o in zip(res.faces, outcomes, strict=True)]
    return {
        "status": "ok",
        "message": "search only: no persons are created here",
        "person_list_search": rules.person_list_search,
        "results": [{"image": res.uri, "status": res.status, "faces_total": len(faces), "faces": faces}],
        "spent": _spent(t0),
    }
