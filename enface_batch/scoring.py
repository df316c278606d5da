"""Model similarity -> the Enface match score in percent, and the seed's thresholds.

The score is a piecewise-linear, strictly increasing map of cosine similarity through anchor points fitted on
lfw_dev (bench/calibrate.py): a score of 80, 85, 90 or 95 is the similarity at which a stated share of
different-person pairs still scores that high (the false-match rate, FMR). So `new_person_threshold=90` means
"treat a face as known when fewer than FMR(90) of strangers would score this high". The measured FMRs, on
folds held out from the fit, are in the README.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from functools import lru_cache
from importlib import resources

import numpy as np

THRESHOLDS = ("80", "85", "90", "95", "no_match", "never")


@lru_cache(maxsize=1)
def _calibrations() -> dict:
    return json.loads(resources.files("enface_batch.data").joinpath("calibration.json").read_text())


class Calibration:
    def __init__(
        self, anchors: list[list[float]], no_match: float, fmr: dict[str, float] | None = None, calibrated: bool = True
    ) -> None:
        a = np.asarray(sorted(anchors), dtype=np.float64)
        if np.any(np.diff(a[:, 0]) <= 0) or np.any(np.diff(a[:, 1]) <= 0):
            raise ValueError("calibration anchors must be strictly increasing in similarity and score")
        self.sim, self.pct = a[:, 0], a[:, 1]
        self._xs, self._ys = self.sim.tolist(), self.pct.tolist()
        self.no_match = float(no_match)
        self.fmr = fmr or {}
        self.calibrated = calibrated

    def score(self, similarity: np.ndarray | float) -> np.ndarray | float:
        out = np.interp(similarity, self.sim, self.pct)
        return float(out) if np.ndim(out) == 0 else out

    def score_one(self, similarity: float) -> float:
        """score() of one similarity as a float, without numpy's per-call cost (a writer scores every face):
        the same arithmetic as np.interp, so the same value to the last bit."""
        xs, ys = self._xs, self._ys
        x = float(similarity)
        if x != x:
            return x
        if x >= xs[-1]:
            return ys[-1]
        if x < xs[0]:
            return ys[0]
        j = bisect_right(xs, x) - 1
        return (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (x - xs[j]) + ys[j]

    def similarity_for(self, score: float) -> float:
        return float(np.interp(score, self.pct, self.sim))

    def threshold(self, value: str | int | float) -> float | None:
        """The seed's new_person_threshold as a score in %; None for 'never'."""
        v = str(value)
        if v == "never":
            return None
        if v == "no_match":
            return self.no_match
        if v not in THRESHOLDS:
            raise ValueError(f"new_person_threshold must be one of {list(THRESHOLDS)}, got {value!r}")
        return float(v)


@lru_cache(maxsize=8)
def calibration_for(embedder: str) -> Calibration:
    """The calibration fitted for an embedder model file; uncalibrated models get a documented generic map."""
    cals = _calibrations()
    entry = cals.get(embedder) or cals["generic-arcface"]
    return Calibration(entry["anchors"], entry["no_match"], entry.get("fmr"), entry.get("calibrated", True))


DEFAULT_EMBEDDER = "sface_2021dec.onnx"


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def score(embedding_a: np.ndarray, embedding_b: np.ndarray, *, embedder: str = DEFAULT_EMBEDDER) -> float:
    """Enface match score in percent (0..100) of two embeddings from the same embedder."""
    return round(calibration_for(embedder).score(similarity(embedding_a, embedding_b)), 2)
