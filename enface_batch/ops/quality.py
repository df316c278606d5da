"""Is a face good enough to become a person? Junk (a face cut by the photo's border and padded with smeared
pixels, the back of a head, a blurred background face) must not create persons; it may still match one.

Two signals, both free at the writer (no pixels needed):

* the detector's score: on lfw_dev the labelled face scores >= 0.8 in 3,807 of 3,811 photos, while the
  background faces that became persons there score below 0.8 in 73 of 351 cases;
* how much of the aligned 112x112 crop the embedder saw lies outside the photo (filled by replicated border
  pixels): computed from the 5 landmarks through the same similarity transform the aligner uses.

On by default for auto-enrolment (scans and `enface action`); ENFACE_ENROL_MIN_DET_SCORE=0 and
ENFACE_ENROL_MAX_OUTSIDE=1 turn it off. Person create and enrol are a user's deliberate choice: not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analyze import Face
from ..models.align import ARCFACE_112
from ..settings import get_settings

_CENTRES = (np.arange(12) + 0.5) * (112 / 12)  # a 12x12 grid of cell centres over the crop
_GRID = np.stack(np.meshgrid(_CENTRES, _CENTRES), -1).reshape(-1, 2)


def outside_fraction(landmarks: list[list[float]], width: int, height: int) -> float:
    """Share of the aligned 112x112 crop that falls outside a width x height photo (0 = all inside)."""
    return float(outside_fractions(np.asarray([landmarks], np.float64), np.array([[width, height]]))[0])


def outside_fractions(landmarks: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """outside_fraction of many faces at once: landmarks (n, 5, 2), sizes (n, 2) as (width, height).

    The crop -> image map is the inverse of the aligner's similarity transform (models/align.py). In 2-D that
    least-squares rotation-and-scale (Umeyama's) is the complex ratio z = sum(conj(s) d) / sum(|s|^2) of the
    centred points, so it is computed here for all faces at once, without a per-face SVD.
    """
    src = landmarks[..., 0] + 1j * landmarks[..., 1]  # image points
    dst = (ARCFACE_112[:, 0] + 1j * ARCFACE_112[:, 1]).astype(np.complex128)  # crop points
    mu_s, mu_d = src.mean(1, keepdims=True), dst.mean()
    s0, d0 = src - mu_s, dst - mu_d
    z = (np.conj(s0) * d0).sum(1, keepdims=True) / (np.abs(s0) ** 2).sum(1, keepdims=True)  # image -> crop
    grid = _GRID[:, 0] + 1j * _GRID[:, 1]
    pts = (grid[None, :] - mu_d) / z + mu_s  # crop -> image
    w, h = sizes[:, :1].astype(np.float64), sizes[:, 1:].astype(np.float64)
    inside = (pts.real >= 0) & (pts.real <= w) & (pts.imag >= 0) & (pts.imag <= h)
    out = 1.0 - inside.mean(1)
    out[(w[:, 0] <= 0) | (h[:, 0] <= 0)] = 0.0
    return out


@dataclass(frozen=True)
class FaceQuality:
    min_det_score: float = 0.8
    max_outside: float = 0.3

    @classmethod
    def from_settings(cls) -> FaceQuality:
        s = get_settings()
        return cls(s.enrol_min_det_score, s.enrol_max_outside)

    def usable_many(self, faces: list[Face], sizes: list[tuple[int, int]]) -> list[bool]:
        """usable() of many faces (of any photos): one vectorised outside check for all."""
        ok = np.array([f.det_score >= self.min_det_score for f in faces], bool)
        if self.max_outside < 1 and ok.any():
            marks = np.asarray([f.landmarks for f in faces], np.float64).reshape(len(faces), 5, 2)
            ok &= outside_fractions(marks, np.asarray(sizes, np.float64).reshape(-1, 2)) <= self.max_outside
        return ok.tolist()

    def usable(self, face: Face, width: int, height: int) -> bool:
        if face.det_score < self.min_det_score:
            return False
        return self.max_outside >= 1 or outside_fraction(face.landmarks, width, height) <= self.max_outside
