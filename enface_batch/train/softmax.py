"""Multinomial logistic regression in numpy: the only learner the attribute heads need.

Full-batch Adam on standardised features with an L2 penalty, a fixed number of steps and no randomness, so the
same data gives the same weights on every machine (up to float rounding in BLAS).
"""

from __future__ import annotations

import numpy as np

from ..models.attributes import softmax


def fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    l2: float = 1e-3,
    steps: int = 400,
    lr: float = 0.05,
    class_weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Fit softmax(((x - mean) / scale) @ w + b); returns {"mean", "scale", "w", "b"} as float32.

    l2 is the penalty per sample on the squared weights (sklearn's C is 1 / (l2 * n)). class_weight scales each
    class's loss (e.g. inverse frequency for balanced recall)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    xs = (x - mean) / scale
    n, d = xs.shape
    onehot = np.eye(n_classes)[y]
    sw = np.ones(n) if class_weight is None else np.asarray(class_weight, np.float64)[y]
    sw = sw / sw.mean()
    w = np.zeros((d, n_classes))
    b = np.zeros(n_classes)
    mw, vw, mb, vb = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        p = softmax(xs @ w + b)
        g = (p - onehot) * sw[:, None] / n
        gw = xs.T @ g + l2 * w
        gb = g.sum(0)
        mw = b1 * mw + (1 - b1) * gw
        vw = b2 * vw + (1 - b2) * gw**2
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb**2
        # cosine decay to zero: the last steps settle into the minimum instead of hovering around it
        step = lr * 0.5 * (1 + np.cos(np.pi * (t - 1) / steps)) * np.sqrt(1 - b2**t) / (1 - b1**t)
        w -= step * mw / (np.sqrt(vw) + eps)
        b -= step * mb / (np.sqrt(vb) + eps)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return {"mean": f32(mean), "scale": f32(scale), "w": f32(w), "b": f32(b)}


def predict_proba(head: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return softmax(((np.asarray(x, np.float32) - head["mean"]) / head["scale"]) @ head["w"] + head["b"])
