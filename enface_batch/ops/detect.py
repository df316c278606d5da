"""/detect and /compare: faces and features of images, and match scores between two images.

The operations work on analysed images (`analyze.ImageResult`s); where the images come from is the input
adapter's business: paths and URIs here (the CLI), uploaded bytes in ops/uploads.py (the endpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from ..analyze import Analyzer, ImageResult
from ..scoring import calibration_for
from .shapes import face_json, image_json, spent


def detect_results(
    results: Iterable[ImageResult], t0: float, *, on_result: Callable[[ImageResult], None] | None = None, **shape: bool
) -> dict:
    """The seed's /detect response over analysed images: status, spent (ms since t0), one entry per image."""
    entries = []
    for res in results:
        if on_result:
            on_result(res)
        entries.append(image_json(res, **shape))
    return {"status": "ok", "spent": spent(t0), "results": entries}


def compare_faces(
    analyzer: Analyzer, r1: ImageResult, r2: ImageResult, **shape: bool
) -> tuple[list[dict], list[dict], float | None]:
    """The faces of two analysed images, each face of image1 with its matches in image2 best first (Enface %
    scores and similarities), and the best pair's score (None when either image has no face)."""
    image1 = [face_json(f, **shape) for f in r1.faces]
    image2 = [face_json(f, **shape) for f in r2.faces]
    score = None
    if r1.faces and r2.faces:
        cal = calibration_for(analyzer.pack.models["embedder"])
        sims = np.stack([f.embedding for f in r1.faces]) @ np.stack([f.embedding for f in r2.faces]).T
        scores = cal.score(sims)
        for i, face in enumerate(image1):
            face["matches"] = [
                {"face": int(j), "score": round(float(scores[i, j]), 2), "similarity": round(float(sims[i, j]), 4)}
                for j in np.argsort(-scores[i])
            ]
        score = round(float(scores.max()), 2)
    return image1, image2, score


def detect(
    analyzer: Analyzer,
    uris: Iterable[str],
    *,
    features: Iterable[str] = (),
    multi: bool = False,
    bbox: bool = False,
    bbox_pro: bool = False,
    thumb: bool = False,
    on_result: Callable[[ImageResult], None] | None = None,
) -> dict:
    """The seed's /detect response: status, spent (ms) and one entry per image, errors included."""
    t0 = time.perf_counter()
    results = analyzer.analyze_uris(uris, features=features, multi=multi)
    return detect_results(results, t0, on_result=on_result, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb)


def compare(
    analyzer: Analyzer,
    uri1: str,
    uri2: str,
    *,
    multi: bool = False,
    bbox: bool = False,
    bbox_pro: bool = False,
    thumb: bool = False,
) -> dict:
    """The seed's /compare response. Every face of image1 carries its matches in image2, best first, as
    Enface % scores; `score` is the best pair's score (null when either image has no face). An unreadable
    image makes the status "error" with a message (the endpoint answers 400 instead: ops/uploads.py)."""
    t0 = time.perf_counter()
    r1, r2 = list(analyzer.analyze_uris([uri1, uri2], multi=multi))
    out: dict = {"status": "ok", "image1": [], "image2": [], "score": None}
    errors = [r for r in (r1, r2) if r.error]
    if errors:
        out["status"] = "error"
        out["message"] = "; ".join(r.error for r in errors)
    out["image1"], out["image2"], out["score"] = compare_faces(
        analyzer, r1, r2, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb
    )
    out["spent"] = spent(t0)
    return out
