"""The "thorough" detector: several views of one image (other detectors, mirror, larger scale, padded border),
their boxes fused into one set.

One detector at one scale misses faces that another view finds: RetinaFace finds turned and profile faces that
YuNet scores low, the mirror image gives each network a second look at a half-profile, a larger scale brings
crowd faces above the network's smallest anchor, and a padded border lets a face cut by the frame sit whole
inside the network's receptive field. bench/detection_eval.py measures what each view adds and costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .detector import Detections, Detector, _iou1

# Landmark order is (eye, eye, nose, mouth corner, mouth corner) from image-left to image-right; a mirror image
# swaps the left and right members of each pair.
_MIRROR = [1, 0, 2, 4, 3]


@dataclass(frozen=True)
class View:
    """One look at the image: a detector, optionally on the mirror image, on a padded image, at another size."""

    detector: Detector
    flip: bool = False
    pad: float = 0.0  # border added on every side, as a share of the image's longer side
    max_side: int | None = None  # None: the detector's own; larger images are reduced to this
    min_score: float | None = None  # None: the detector's own threshold

    def detect(self, rgb: np.ndarray) -> Detections:
        h, w = rgb.shape[:2]
        img = rgb[:, ::-1] if self.flip else rgb
        p = round(self.pad * max(h, w))
        if p:
            img = cv2.copyMakeBorder(np.ascontiguousarray(img), p, p, p, p, cv2.BORDER_CONSTANT, value=0)
        det = self.detector.detect(np.ascontiguousarray(img), max_side=self.max_side)
        if self.min_score is not None and len(det):
            det = det.take(np.nonzero(det.scores >= self.min_score)[0])
        if not len(det):
            return det
        boxes, kps = det.boxes - p, det.kps - p
        if self.flip:
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
            kps = kps[:, _MIRROR].copy()
            kps[..., 0] = w - kps[..., 0]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return Detections(boxes.astype(np.float32), det.scores, kps.astype(np.float32))


def fuse(parts: Sequence[Detections], *, iou: float = 0.4) -> tuple[Detections, np.ndarray]:
    """Join the views' boxes into faces, greedy by score: each box joins the best-scoring cluster it overlaps by
    `iou`. Returns one detection per cluster and how many of the views' boxes it holds.

    `parts` come in order of priority, and a cluster is represented by the best member of the first view that
    has one (box, score and landmarks), not by a blend: detectors' scores are not on one scale (the enrolment
    gate ENFACE_ENROL_MIN_DET_SCORE was set on the primary's), and a face the primary view finds keeps exactly
    the box and landmarks it has in fast mode, so its crop and embedding do not change.
    """
    keep = [(r, d) for r, d in enumerate(parts) if len(d)]
    if not keep:
        return Detections.empty(), np.zeros(0, np.int64)
    boxes = np.concatenate([d.boxes for _, d in keep])
    scores = np.concatenate([d.scores for _, d in keep])
    kps = np.concatenate([d.kps for _, d in keep])
    rank = np.concatenate([np.full(len(d), r) for r, d in keep])
    heads: list[int] = []
    members: list[list[int]] = []
    for j in np.argsort(-scores, kind="stable"):
        if heads:
            ov = _iou1(boxes[j], boxes[heads])
            k = int(np.argmax(ov))
            if ov[k] >= iou:
                members[k].append(int(j))
                continue
        heads.append(int(j))
        members.append([int(j)])
    # members are in descending score order, so the first of the lowest rank is that view's best box
    rep = np.array([min(m, key=lambda i: rank[i]) for m in members], np.int64)
    det = Detections(boxes[rep], scores[rep].astype(np.float32), kps[rep])
    return det, np.array([len(m) for m in members], np.int64)


class MultiViewDetector:
    """Run every view (the first is the primary) and fuse their boxes."""

    def __init__(self, views: Sequence[View], *, fuse_iou: float = 0.4) -> None:
        self.views = list(views)
        self.fuse_iou = fuse_iou
        self.threshold = views[0].detector.threshold

    @property
    def session(self):
        return self.views[0].detector.session

    def detect(self, rgb: np.ndarray) -> Detections:
        return fuse([v.detect(rgb) for v in self.views], iou=self.fuse_iou)[0]

    def detect_many(self, images: Sequence[np.ndarray], *, max_batch: int = 8) -> list[Detections]:
        return [self.detect(rgb) for rgb in images]  # views resize and pad each photo differently
