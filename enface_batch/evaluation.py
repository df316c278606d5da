"""Accuracy measurement on the labelled sets in ENFACE_TEST_DATA (../shared/data): LFW verification,
CMU+MIT detection, FairFace gender/age. Used by bench/accuracy.py, bench/calibrate.py and the tests."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analyze import Analyzer, ImageResult

AGE_BINS = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
_BIN_EDGES = [3, 10, 20, 30, 40, 50, 60, 70]


def age_bin(age: float) -> str:
    return AGE_BINS[int(np.searchsorted(_BIN_EDGES, age, side="right"))]


@dataclass
class Pair:
    a: str
    b: str
    same: bool
    fold: int


def lfw_pairs(root: Path) -> list[Pair]:
    """LFW View-2 pairs_dev.txt: first line 'folds\tn', then n same and n different pairs per fold."""
    lines = (root / "pairs_dev.txt").read_text().split("\n")
    folds, n = (int(x) for x in lines[0].split())
    img = lambda name, i: str(root / "images" / name / f"{name}_{int(i):04d}.jpg")  # noqa: E731
    pairs, rows = [], [ln.split("\t") for ln in lines[1:] if ln.strip()]
    for k in range(folds):
        for j, r in enumerate(rows[k * 2 * n : (k + 1) * 2 * n]):
            if j < n:
                pairs.append(Pair(img(r[0], r[1]), img(r[0], r[2]), True, k))
            else:
                pairs.append(Pair(img(r[0], r[1]), img(r[2], r[3]), False, k))
    return pairs


def central_face(res: ImageResult):
    """The face nearest the image centre (LFW and FairFace crops are centred on their subject)."""
    if not res.faces:
        return None
    cx, cy = res.width / 2, res.height / 2
    return min(res.faces, key=lambda f: np.hypot((f.bbox[0] + f.bbox[2]) / 2 - cx, (f.bbox[1] + f.bbox[3]) / 2 - cy))


def embed_central(analyzer: Analyzer, paths: Iterable[str], *, features=()) -> dict[str, object]:
    out = {}
    for res in analyzer.analyze_uris(list(paths), features=features, multi=True):
        out[res.uri] = central_face(res)
    return out


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    cand = np.unique(sims)
    mids = np.concatenate([[cand[0] - 1e-6], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1e-6]])
    acc = [((sims > t) == same).mean() for t in mids]
    return float(mids[int(np.argmax(acc))])


def verification_folds(sims: np.ndarray, same: np.ndarray, folds: np.ndarray) -> list[tuple[float, float]]:
    """LFW protocol: for each fold, the threshold is chosen on the other folds and accuracy measured on it."""
    out = []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t = best_threshold(sims[train], same[train])
        out.append((t, float(((sims[test] > t) == same[test]).mean())))
    return out


def impostor_similarities(emb: dict[str, np.ndarray], identity: dict[str, str]) -> np.ndarray:
    """Similarities of every pair of images of different people (all cross-identity pairs)."""
    keys = [k for k in emb if emb[k] is not None]
    x = np.stack([emb[k] for k in keys]).astype(np.float32)
    ids = np.array([identity[k] for k in keys])
    sims = []
    for i in range(0, len(x), 512):
        s = x[i : i + 512] @ x.T
        ii = np.arange(i, min(i + 512, len(x)))[:, None]
        mask = (np.arange(len(x))[None, :] > ii) & (ids[i : i + 512, None] != ids[None, :])
        sims.append(s[mask])
    return np.concatenate(sims)


def genuine_similarities(emb: dict[str, np.ndarray], identity: dict[str, str]) -> np.ndarray:
    by_id: dict[str, list] = {}
    for k, e in emb.items():
        if e is not None:
            by_id.setdefault(identity[k], []).append(e)
    sims = []
    for es in by_id.values():
        if len(es) > 1:
            x = np.stack(es)
            s = x @ x.T
            sims.append(s[np.triu_indices(len(es), 1)])
    return np.concatenate(sims) if sims else np.zeros(0)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def mitcmu_boxes(root: Path) -> dict[str, np.ndarray]:
    boxes: dict[str, list] = {p.name: [] for p in sorted((root / "test_jpg").glob("*.jpg"))}
    for line in (root / "ground_truth_bboxes.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            boxes.setdefault(parts[0], []).append([float(v) for v in parts[1:]])
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in boxes.items()}


def detection_scores(analyzer: Analyzer, root: Path, *, min_iou: float = 0.3) -> dict[str, float]:
    """Recall and false positives on CMU+MIT. Its boxes are tight and cover only upright frontal faces, so a
    detection is a hit at IoU >= min_iou or when it contains the GT box's centre; an unmatched detection in an
    image with no GT box is not counted as false (those images hold unlabelled faces)."""
    gt = mitcmu_boxes(root)
    hits = total = fp = dets = 0
    for res in analyzer.analyze_uris([str(root / "test_jpg" / n) for n in gt]):
        g = gt[Path(res.uri).name]
        d = np.asarray([f.bbox for f in res.faces], np.float32).reshape(-1, 4)
        total += len(g)
        dets += len(d)
        if not len(g):
            continue
        m = iou(g, d) if len(d) else np.zeros((len(g), 0))
        if len(d):
            gc = np.stack([(g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2], 1)
            inside = (
                (gc[:, None, 0] >= d[None, :, 0])
                & (gc[:, None, 0] <= d[None, :, 2])
                & (gc[:, None, 1] >= d[None, :, 1])
                & (gc[:, None, 1] <= d[None, :, 3])
            )
            m = np.where(inside & (m > 0.1), np.maximum(m, min_iou), m)
        used = set()
        for i in np.argsort(-m.max(1) if m.size else np.zeros(len(g))):
            if not m.size:
                break
            j = int(np.argmax(np.where([k in used for k in range(m.shape[1])], -1, m[i])))
            if m[i, j] >= min_iou and j not in used:
                used.add(j)
                hits += 1
        fp += len(d) - len(used)
    return {"recall": hits / max(total, 1), "gt_faces": total, "detections": dets, "false_positives": fp}


def fairface_rows(root: Path, split: str = "val", limit: int | None = None) -> list[dict]:
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["image"].startswith(split + "/")]
    return rows[:limit] if limit else rows


def attribute_scores(analyzer: Analyzer, root: Path, split: str = "val", limit: int | None = None) -> dict:
    rows = fairface_rows(root, split, limit)
    faces = embed_central(analyzer, [str(root / r["image"]) for r in rows], features=("gender", "age"))
    g_ok = n = bin_ok = adj_ok = 0
    abs_err = []
    for r in rows:
        f = faces.get(str(root / r["image"]))
        if f is None:
            continue
        n += 1
        g_ok += f.features["gender"] == r["gender"].lower()
        pred_bin = AGE_BINS.index(age_bin(f.features["age"]))
        true_bin = AGE_BINS.index(r["age"])
        bin_ok += pred_bin == true_bin
        adj_ok += abs(pred_bin - true_bin) <= 1
        lo, hi = ([0, 3, 10, 20, 30, 40, 50, 60, 70] + [100])[true_bin : true_bin + 2]
        abs_err.append(max(0.0, lo - f.features["age"], f.features["age"] - (hi - 1)))
    return {
        "images": len(rows),
        "faces_found": n,
        "gender_accuracy": g_ok / max(n, 1),
        "age_bin_accuracy": bin_ok / max(n, 1),
        "age_bin_or_adjacent": adj_ok / max(n, 1),
        "age_years_outside_bin": float(np.mean(abs_err)) if abs_err else float("nan"),
    }
