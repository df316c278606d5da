"""Face alignment: similarity transforms from 5 landmarks to a template, and the warps they drive.

Landmark order everywhere: image-left eye, image-right eye, nose tip, image-left mouth corner, image-right
mouth corner (the order YuNet, RetinaFace and SCRFD all emit).
"""

from __future__ import annotations

import cv2
import numpy as np

# insightface's ArcFace template for 112x112 crops; SFace and w600k_* embedders were trained on it.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# dlib's get_face_chip_details(shape5, size, padding=0.2) expressed on detector landmarks, as a fraction of the
# chip size; the Cydral age/gender predictors were trained on such chips.
DLIB_CHIP = np.array(
    [[0.2951, 0.2939], [0.6903, 0.3014], [0.4837, 0.5299], [0.3166, 0.6699], [0.6679, 0.6791]], dtype=np.float32
)

# A wider view for the wide-crop attribute CNN: the ArcFace template shrunk to 75 % and moved up a little, so
# hair, ears, neck and some background show (the identity crop cuts them). Not wider: FairFace's crops (the
# training data) end just above the head, so a wider view would mostly show replicated border there.
WIDE_SIZE = 64
WIDE_TEMPLATE = ((ARCFACE_112 / 112.0 - 0.5) * 0.75 + np.array([0.5, 0.45])).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src points onto dst (Umeyama).

    Closed form and deterministic, unlike RANSAC/LMEDS estimators, so a face always gets the same crop.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def warp(rgb: np.ndarray, kps: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    m = similarity_transform(kps, template)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def arcface_crop(rgb: np.ndarray, kps: np.ndarray, size: int = 112) -> np.ndarray:
    return warp(rgb, kps, ARCFACE_112 * (size / 112.0), size)


def chip_crop(rgb: np.ndarray, kps: np.ndarray, size: int) -> np.ndarray:
    return warp(rgb, kps, DLIB_CHIP * size, size)


def wide_crop(rgb: np.ndarray, kps: np.ndarray, size: int = WIDE_SIZE) -> np.ndarray:
    return warp(rgb, kps, WIDE_TEMPLATE * size, size)


def rotated_box(box: np.ndarray, kps: np.ndarray) -> list[list[float]]:
    """The face box turned with the face: four [x, y] corners, clockwise from the face's top-left.

    The roll comes from the eye line; the box keeps its width, height and centre.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    eye_l, eye_r = kps[0], kps[1]
    angle = np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])
    c, s = np.cos(angle), np.sin(angle)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    corners = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
    return [[float(cx + dx * c - dy * s), float(cy + dx * s + dy * c)] for dx, dy in corners]


def face_crop(rgb: np.ndarray, box: np.ndarray, *, margin: float = 0.25, max_side: int = 224) -> np.ndarray:
    """The face box widened by `margin` on each side (clipped to the image), scaled down to at most max_side."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    crop = rgb[top : max(bottom, top + 1), left : max(right, left + 1)]
    f = max_side / max(crop.shape[:2])
    if f < 1:
        crop = cv2.resize(
            crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))), interpolation=cv2.INTER_AREA
        )
    return np.ascontiguousarray(crop)
