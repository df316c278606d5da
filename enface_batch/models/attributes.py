"""Gender and age predictors. Each takes the original image and landmarks, and crops the way it was trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .align import similarity_transform
from .session import Model

try:
    import cv2
except ImportError:  # pragma: no cover - cv2 is a hard dependency
    cv2 = None

# FairFace's labels: seven perceived races and nine age bins (the bins' year edges: 0-2 is [0, 3), ...).
RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
AGE_EDGES = (0, 3, 10, 20, 30, 40, 50, 60, 70, 100)


def age_bin(age: float) -> str:
    """FairFace's age bin of an age in years."""
    return AGE_BINS[int(np.searchsorted(AGE_EDGES[1:-1], age, side="right"))]


def attribute_columns(features: dict) -> dict:
    """The faces table's (and the detect export's) attribute columns from a face's features: null when not asked."""
    age = features.get("age")
    return {
        "gender": features.get("gender"),
        "gender_score": features.get("gender_score"),
        "age": age,
        "age_bin": features.get("age_bin") or (age_bin(age) if age is not None else None),
        "race": features.get("race"),
        "race_score": features.get("race_score"),
    }


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, K] logits."""
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class Attributes:
    """Interface: predict(rgb, kps[N,5,2], boxes[N,4]) -> list of {"gender": "male"|"female", "age": float, ...}."""

    features: frozenset[str] = frozenset()

    def predict(self, rgb: np.ndarray, kps: np.ndarray, boxes: np.ndarray) -> list[dict]:
        raise NotImplementedError


class InsightfaceGenderAge(Attributes):
    """insightface genderage.onnx: a 96x96 crop around the box (1.5x its longest side), logits [f, m, age/100]."""

    features = frozenset({"gender", "age"})

    def __init__(self, model: str | Path, **kw) -> None:
        self.model = Model(str(model), **kw)
        self.size = int(self.model.input_shape[2]) if isinstance(self.model.input_shape[2], int) else 96

    def predict(self, rgb: np.ndarray, kps: np.ndarray, boxes: np.ndarray) -> list[dict]:
        if len(boxes) == 0:
            return []
        crops = []
        for x1, y1, x2, y2 in boxes:
            cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 1.5
            src = np.float32([[cx - side / 2, cy - side / 2], [cx + side / 2, cy - side / 2], [cx, cy]])
            dst = np.float32([[0, 0], [self.size, 0], [self.size / 2, self.size / 2]])
            m = similarity_transform(src, dst)
            crops.append(cv2.warpAffine(rgb, m, (self.size, self.size), borderValue=0))
        x = np.ascontiguousarray(np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2))
        pred = self.model.run(x)[0]
        out = []
        for p, g in zip(pred, softmax(pred[:, :2]), strict=True):
            i = int(np.argmax(g))
            out.append({"gender": ("female", "male")[i], "gender_score": float(g[i]), "age": float(p[2] * 100)})
        return out
