"""/detect and /compare: faces and features of images, and match scores between two images."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from ..analyze import Analyzer, ImageResult
from ..scoring import calibration_for
from .faces import face_json


def image_json(res: ImageResult, **shape) -> dict:
    if res.error:
        return {"image": res.uri, "status": "error", "reason": res.reason, "message": res.error, "faces": []}
    return {
        "image": res.uri,
        "status": res.status,
        "width": res.width,
        "height": res.height,
        "faces": [face_json(f, **shape) for f in res.faces],
    }


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
    results = []
    for res in analyzer.analyze_uris(uris, features=features, multi=multi):
        if on_result:
            on_result(res)
        results.append(image_json(res, bbox=bbox, bbox_pro=bbox_pro, thumb=thumb))
    return {"status": "ok", "spent": round((time.perf_counter() - t0) * 1000), "results": results}


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
    Enface % scores; `score` is the best pair's score (null when either image has no face)."""
    t0 = time.perf_counter()
    r1, r2 = list(analyzer.analyze_uris([uri1, uri2], multi=multi))
    shape = {"bbox": bbox, "bbox_pro": bbox_pro, "thumb": thumb}
    out: dict = {"status": "ok", "image1": [], "image2": [], "score": None}
    errors = [r for r in (r1, r2) if r.error]
    if errors:
        out["status"] = "error"
        out["message"] = "; ".join(r.error for r in errors)
    cal = calibration_for(analyzer.pack.models["embedder"])
    out["image1"] = [face_json(f, **shape) for f in r1.faces]
    out["image2"] = [face_json(f, **shape) for f in r2.faces]
    if r1.faces and r2.faces:
        sims = np.stack([f.embedding for f in r1.faces]) @ np.stack([f.embedding for f in r2.faces]).T
        scores = cal.score(sims)
        for i, face in enumerate(out["image1"]):
            order = np.argsort(-scores[i])
            face["matches"] = [
                {"face": int(j), "score": round(float(scores[i, j]), 2), "similarity": round(float(sims[i, j]), 4)}
                for j in order
            ]
        out["score"] = round(float(scores.max()), 2)
    out["spent"] = round((time.perf_counter() - t0) * 1000)
    return out
