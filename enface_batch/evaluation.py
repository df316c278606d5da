"""Accuracy measurement on the labelled sets in ENFACE_TEST_DATA (../shared/data): LFW verification,
CMU+MIT detection, FairFace gender/age. Used by bench/accuracy.py, bench/calibrate.py and the tests."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analyze import Analyzer, ImageResult
from .models.attributes import AGE_BINS, AGE_EDGES, RACES, age_bin


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


def _credit_centres(m: np.ndarray, g: np.ndarray, d: np.ndarray, min_iou: float) -> np.ndarray:
    """CMU+MIT boxes are tight: a detection holding a GT box's centre (and overlapping it) counts as a hit."""
    gc = np.stack([(g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2], 1)
    inside = (
        (gc[:, None, 0] >= d[None, :, 0])
        & (gc[:, None, 0] <= d[None, :, 2])
        & (gc[:, None, 1] >= d[None, :, 1])
        & (gc[:, None, 1] <= d[None, :, 3])
    )
    return np.where(inside & (m > 0.1), np.maximum(m, min_iou), m)


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
            m = _credit_centres(m, g, d, min_iou)
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
        lo, hi = AGE_EDGES[true_bin : true_bin + 2]
        abs_err.append(max(0.0, lo - f.features["age"], f.features["age"] - (hi - 1)))
    return {
        "images": len(rows),
        "faces_found": n,
        "gender_accuracy": g_ok / max(n, 1),
        "age_bin_accuracy": bin_ok / max(n, 1),
        "age_bin_or_adjacent": adj_ok / max(n, 1),
        "age_years_outside_bin": float(np.mean(abs_err)) if abs_err else float("nan"),
    }


# --- issue 6: race, per-face attribute predictions, detection precision-recall ---------------------------------


def attribute_predictions(
    analyzer: Analyzer, root: Path, split: str = "val", limit: int | None = None, features=("gender", "age", "race")
) -> list[dict]:
    """One row per FairFace image: its labels and what the pack answered for the central face (None: no face)."""
    features = tuple(f for f in features if f in analyzer.pack.features)
    rows = fairface_rows(root, split, limit)
    faces = embed_central(analyzer, [str(root / r["image"]) for r in rows], features=features)
    out = []
    for r in rows:
        f = faces.get(str(root / r["image"]))
        out.append({**r, "pred": dict(f.features) if f is not None else None})
    return out


def attribute_summary(preds: list[dict]) -> dict:
    """Gender accuracy, age bins (exact, adjacent, years outside the bin, per true bin) and race (top-1, per-class
    recall, confusion matrix, share answered 'unknown') over the faces found."""
    found = [p for p in preds if p["pred"] is not None]
    out: dict = {"images": len(preds), "faces_found": len(found)}
    if not found:
        return out
    if "gender" in found[0]["pred"]:
        out["gender_accuracy"] = float(np.mean([p["pred"]["gender"] == p["gender"].lower() for p in found]))
    if "age" in found[0]["pred"]:
        edges = [0, 3, 10, 20, 30, 40, 50, 60, 70, 100]
        tb = np.array([AGE_BINS.index(p["age"]) for p in found])
        years = np.array([p["pred"]["age"] for p in found], np.float64)
        pb = np.array([AGE_BINS.index(age_bin(a)) for a in years])
        lo, hi = np.array(edges)[tb], np.array(edges)[tb + 1] - 1
        outside = np.maximum(0.0, np.maximum(lo - years, years - hi))
        out.update(
            age_bin_accuracy=float((pb == tb).mean()),
            age_bin_or_adjacent=float((np.abs(pb - tb) <= 1).mean()),
            age_years_outside_bin=float(outside.mean()),
            age_by_bin={
                b: {
                    "faces": int((tb == i).sum()),
                    "exact": float((pb[tb == i] == i).mean()) if (tb == i).any() else float("nan"),
                    "adjacent": float((np.abs(pb[tb == i] - i) == 1).mean()) if (tb == i).any() else float("nan"),
                    "years_outside": float(outside[tb == i].mean()) if (tb == i).any() else float("nan"),
                }
                for i, b in enumerate(AGE_BINS)
            },
        )
    if "race" in found[0]["pred"]:
        truth = np.array([RACES.index(p["race"]) for p in found])
        scores = np.array([[p["pred"]["race_scores"][c] for c in RACES] for p in found], np.float64)
        # the answered class where there is one (the scores are rounded, so their argmax may tie), else the top score
        top = np.array(
            [
                RACES.index(p["pred"]["race"]) if p["pred"]["race"] in RACES else int(np.argmax(s))
                for p, s in zip(found, scores, strict=True)
            ]
        )
        conf = np.zeros((len(RACES), len(RACES)), np.int64)
        np.add.at(conf, (truth, top), 1)
        recall = conf.diagonal() / np.maximum(conf.sum(1), 1)
        unknown = np.array([p["pred"]["race"] == "unknown" for p in found])
        answered = ~unknown
        out.update(
            race_top1=float((top == truth).mean()),
            race_recall={c: float(r) for c, r in zip(RACES, recall, strict=True)},
            race_min_recall=float(recall.min()),
            race_confusion=conf.tolist(),
            race_unknown_share=float(unknown.mean()),
            race_accuracy_when_answered=float((top[answered] == truth[answered]).mean()) if answered.any() else 0.0,
            race_accuracy=float(((top == truth) & answered).mean()),  # "unknown" counted as wrong
        )
    out.update(_breakdowns(found))
    return out


# Age groups for the breakdowns: children are the hard case (faces change fastest, fewest training images).
AGE_GROUPS = {
    "children 0-9": ("0-2", "3-9"),
    "10-19": ("10-19",),
    "adults 20-59": ("20-29", "30-39", "40-49", "50-59"),
    "60+": ("60-69", "more than 70"),
    "all 20+": ("20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"),
}


def _breakdowns(found: list[dict]) -> dict:
    """Gender, race and age per age group and gender per race class; gender and age-bin confusion matrices."""
    pred = [p["pred"] for p in found]
    out: dict = {"by_age_group": {}, "gender_by_race": {}}
    has = {k: k in pred[0] for k in ("gender", "age", "race")}
    tb = np.array([AGE_BINS.index(p["age"]) for p in found])
    pb = np.array([AGE_BINS.index(q.get("age_bin") or age_bin(q["age"])) for q in pred]) if has["age"] else None
    g_ok = (
        np.array([q["gender"] == p["gender"].lower() for p, q in zip(found, pred, strict=True)])
        if has["gender"]
        else None
    )
    r_ok = np.array([q["race"] == p["race"] for p, q in zip(found, pred, strict=True)]) if has["race"] else None
    for name, bins in AGE_GROUPS.items():
        m = np.isin(tb, [AGE_BINS.index(b) for b in bins])
        row: dict = {"faces": int(m.sum())}
        if m.any():
            if g_ok is not None:
                row["gender"] = float(g_ok[m].mean())
            if r_ok is not None:
                row["race"] = float(r_ok[m].mean())
            if pb is not None:
                row["age_bin"] = float((pb[m] == tb[m]).mean())
                row["age_bin_or_adjacent"] = float((np.abs(pb[m] - tb[m]) <= 1).mean())
        out["by_age_group"][name] = row
    if g_ok is not None:
        races = np.array([p["race"] for p in found])
        out["gender_by_race"] = {c: float(g_ok[races == c].mean()) for c in RACES if (races == c).any()}
        truth = np.array([p["gender"].lower() == "male" for p in found], int)
        guess = np.array([q["gender"] == "male" for q in pred], int)
        conf = np.zeros((2, 2), np.int64)
        np.add.at(conf, (truth, guess), 1)
        out["gender_confusion"] = conf.tolist()  # rows: female, male (label); columns: predicted
    if pb is not None:
        conf = np.zeros((len(AGE_BINS), len(AGE_BINS)), np.int64)
        np.add.at(conf, (tb, pb), 1)
        out["age_confusion"] = conf.tolist()
    return out


def detection_pr(detector, root: Path, *, limit: int | None = None, floor: float = 0.3, min_iou: float = 0.3) -> dict:
    """Every detection above `floor` in the labelled CMU+MIT images, with its score and whether it matched a GT box
    (same matching rule as detection_scores, greedy by score), for a precision-recall curve. Images without GT
    boxes are skipped (they hold unlabelled faces). Boxes come from the pack's primary detector; a landmark
    refiner does not move them."""
    from . import imaging

    prim = getattr(detector, "primary", detector)
    gt = {k: v for k, v in mitcmu_boxes(root).items() if len(v)}
    names = sorted(gt)[:limit] if limit else sorted(gt)
    saved, prim.threshold = prim.threshold, floor
    scores, hits, n_gt = [], [], 0
    try:
        for name in names:
            img = imaging.load(str(root / "test_jpg" / name))
            det = prim.detect(img.rgb)
            g = gt[name]
            n_gt += len(g)
            if not len(det):
                continue
            d = det.boxes * img.scale
            m = iou(g, d)
            m = _credit_centres(m, g, d, min_iou)
            free = np.ones(len(g), bool)
            for j in np.argsort(-det.scores):
                cand = np.where(free, m[:, j], -1.0)
                i = int(np.argmax(cand))
                hit = cand[i] >= min_iou
                if hit:
                    free[i] = False
                scores.append(float(det.scores[j]))
                hits.append(bool(hit))
    finally:
        prim.threshold = saved
    return {"scores": np.array(scores), "hits": np.array(hits, bool), "gt_faces": n_gt, "images": len(names)}


def pr_at(pr: dict, threshold: float) -> tuple[float, float]:
    """(precision, recall) of the detections scoring at least `threshold`."""
    keep = pr["scores"] >= threshold
    tp = int(pr["hits"][keep].sum())
    return tp / max(int(keep.sum()), 1), tp / max(pr["gt_faces"], 1)
