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
from ..models.align import ARCFACE_112, similarity_transform
from ..settings import get_settings

_CENTRES = (np.arange(12) + 0.5) * (112 / 12)  # a 12x12 grid of cell centres over the crop
_GRID = np.stack(np.meshgrid(_CENTRES, _CENTRES), -1).reshape(-1, 2)


def outside_fraction(landmarks: list[list[float]], width: int, height: int) -> float:
    """Share of the aligned 112x112 crop that falls outside a width x height photo (0 = all inside)."""
    if not width or not height:
        return 0.0
    m = similarity_transform(np.asarray(landmarks, np.float64), ARCFACE_112)  # image -> crop
    a, t = m[:, :2], m[:, 2]
    pts = (_GRID - t) @ np.linalg.inv(a).T  # crop -> image
    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= width) & (pts[:, 1] >= 0) & (pts[:, 1] <= height)
    return float(1.0 - inside.mean())


@dataclass(frozen=True)
class FaceQuality:
    min_det_score: float = 0.8
    max_outside: float = 0.3

    @classmethod
    def from_settings(cls) -> FaceQuality:
        s = get_settings()
        return cls(s.enrol_min_det_score, s.enrol_max_outside)

    def usable(self, face: Face, width: int, height: int) -> bool:
        if face.det_score < self.min_det_score:
            return False
        return self.max_outside >= 1 or outside_fraction(face.landmarks, width, height) <= self.max_outside
