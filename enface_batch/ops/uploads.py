"""/detect, /compare and a search-only /action over uploaded image bytes (the endpoint's inputs).

The input adapter for uploads: bytes become `analyze.ImageResult`s, then the same code as for paths answers
(ops.detect, ops.action.search_image); only the policy differs (a bad image is a 400 here). Nothing here writes
to the lake.
"""

from __future__ import annotations

import time

from ..analyze import Analyzer, FeatureUnavailable, ImageResult, check_features
from ..imaging import DecodedImage, ImageError, decode
from ..settings import get_settings
from . import validate
from .action import ActionEngine, resolve_rules, search_image
from .detect import compare_faces, detect_results
from .errors import BadRequest
from .shapes import spent

SEARCH_ONLY = (
    "this endpoint is read-only: /action searches and creates no persons. Persons are created by the scan flow "
    "(`enface run`) or the CLI (`enface action`, `enface person create`, `enface enrol`); leave out "
    "person_list_add and new_person_threshold (or send new_person_threshold=never)"
)


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
    return detect_results(results, t0, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb)


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
    image1, image2, score = compare_faces(analyzer, r1, r2, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb)
    return {"status": "ok", "image1": image1, "score": score, "image2": image2, "spent": spent(t0)}


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
    entry = search_image(engine, res, rules, results=k, drop_image=True, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb)
    return {
        "status": "ok",
        "message": "search only: no persons are created here",
        "person_list_search": rules.person_list_search,
        "results": [entry],
        "spent": spent(t0),
    }
