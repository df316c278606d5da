"""Detection precision and recall per detector setting, on CMU+MIT and on labelled crowd photos.

    python bench/detection_eval.py                    # the table per ENFACE_DET_MODE (fast, thorough), both sets
    python bench/detection_eval.py --explore          # what each candidate view adds and costs (dev split only)
    python bench/detection_eval.py --write            # both, into reports/accuracy/detection_modes.md

Sets:

* CMU+MIT (../shared/data/detection_mitcmu): upright frontal faces with tight boxes. Matching as in
  enface_batch.evaluation (IoU >= 0.3 or the detection holds the label's centre); images without labels skipped.
* crowd: group and crowd photos from ../shared/data/fixtures with boxes labelled for this project
  (bench/labels/crowd_faces.json; how they were made is in its "how" field). IoU >= 0.5, as WIDER FACE.
  Each photo is in the "dev" split (settings were chosen on it) or the "report" split (never used to choose).
  Boxes marked "ignore" (a face too blurred, tiny or hidden to say) neither count as misses nor make a detection
  false.

Columns: recall of all labelled faces and of faces at least 32 px (shorter side), precision, detections per
labelled face, and detector milliseconds per image (measured in this process; other jobs may share the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from enface_batch import imaging
from enface_batch.evaluation import _credit_centres, iou, mitcmu_boxes
from enface_batch.settings import get_settings

LABELS = Path(__file__).resolve().parent / "labels" / "crowd_faces.json"
REPORT = Path(__file__).resolve().parents[1] / "reports" / "accuracy" / "detection_modes.md"
MIN_SIDE = 32


def crowd_labels(split: str | None = None) -> dict[str, dict]:
    """{image path under fixtures/: {"faces": [[x1, y1, x2, y2]], "ignore": [...], "split": "dev"|"report"}}"""
    data = json.loads(LABELS.read_text())["images"]
    return {k: v for k, v in data.items() if split in (None, v["split"])}


def match(gt: np.ndarray, ign: np.ndarray, det: np.ndarray, *, min_iou: float, centres: bool) -> dict:
    """Greedy by detection order (callers pass them best first): each detection takes its best free label."""
    n = len(gt)
    hit_gt = np.zeros(n, bool)
    tp = fp = 0
    if len(det):
        m = iou(gt, det) if n else np.zeros((0, len(det)))
        if centres and n:
            m = _credit_centres(m, gt, det, min_iou)
        mi = iou(ign, det) if len(ign) else np.zeros((0, len(det)))
        for j in range(len(det)):
            cand = np.where(hit_gt, -1.0, m[:, j]) if n else np.zeros(0)
            i = int(np.argmax(cand)) if n else -1
            if n and cand[i] >= min_iou:
                hit_gt[i] = True
                tp += 1
            elif len(ign) and mi[:, j].max() >= 0.3:
                pass  # on a face nobody could label for sure: neither right nor wrong
            else:
                fp += 1
    side = np.minimum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]) if n else np.zeros(0)
    big = side >= MIN_SIDE
    return {
        "gt": n,
        "hit": int(hit_gt.sum()),
        "gt32": int(big.sum()),
        "hit32": int(hit_gt[big].sum()),
        "tp": tp,
        "fp": fp,
        "dets": len(det),
    }


def summarise(rows: list[dict], ms: list[float]) -> dict:
    t = {k: sum(r[k] for r in rows) for k in ("gt", "hit", "gt32", "hit32", "tp", "fp", "dets")}
    return {
        "images": len(rows),
        "faces": t["gt"],
        "faces_32px": t["gt32"],
        "recall": t["hit"] / max(t["gt"], 1),
        "recall_32px": t["hit32"] / max(t["gt32"], 1),
        "precision": t["tp"] / max(t["tp"] + t["fp"], 1),
        # detections on 'ignore' regions (unlabelled tiny faces) are left out, as they are from precision
        "dets_per_face": (t["tp"] + t["fp"]) / max(t["gt"], 1),
        "false": t["fp"],
        "ms_per_image": float(np.mean(ms)) if ms else 0.0,
    }


def border_cuts(items, *, cut: float = 0.4, per_image: int = 3) -> list:
    """Faces cut by the photo's border: for the largest faces (>= 32 px) of each photo, a crop whose left (then
    right, top, ...) edge runs through the face, leaving `cut` of its width outside. Labels are clipped to the
    crop, as WIDER FACE labels the visible part; a face with less than half of itself inside becomes 'ignore'."""
    out = []
    sides = ("left", "right", "top", "left")
    for path, gt, ign, _ in items:
        if not len(gt):
            continue
        side_len = np.minimum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1])
        for n, i in enumerate([i for i in np.argsort(-side_len) if side_len[i] >= MIN_SIDE][:per_image]):
            x1, y1, x2, y2 = gt[i]
            w, h = x2 - x1, y2 - y1
            W = max(float(gt[:, 2].max()), 1e9)
            box = {
                "left": (x1 + cut * w, 0, W, W),
                "right": (0, 0, x2 - cut * w, W),
                "top": (0, y1 + cut * h, W, W),
            }[sides[n]]
            out.append((path, *_clip_labels(gt, ign, box), box))
    return out


def _clip_labels(gt: np.ndarray, ign: np.ndarray, crop) -> tuple[np.ndarray, np.ndarray]:
    cx1, cy1, cx2, cy2 = crop
    clipped = np.stack(
        [gt[:, 0].clip(cx1, cx2), gt[:, 1].clip(cy1, cy2), gt[:, 2].clip(cx1, cx2), gt[:, 3].clip(cy1, cy2)], 1
    )
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    vis = area(clipped) / np.maximum(area(gt), 1e-9)
    shift = np.array([cx1, cy1, cx1, cy1], np.float32)
    keep = vis >= 0.5
    ign2 = np.concatenate([ign, clipped[(vis > 0) & ~keep]])
    return (clipped[keep] - shift).astype(np.float32), (ign2 - shift).astype(np.float32).reshape(-1, 4)


def decode(path: str, crop=None):
    """The image as the pipeline decodes it, optionally cropped (crop in original pixels); and the factor from the
    array's pixels to the labels' pixels."""
    img = imaging.load(path, max_side=get_settings().decode_max_side)
    if crop is None:
        return img.rgb, img.scale
    x1, y1, x2, y2 = (int(round(v / img.scale)) for v in crop)
    return np.ascontiguousarray(img.rgb[max(y1, 0) : y2, max(x1, 0) : x2]), img.scale


def load_set(name: str, split: str | None = None) -> list[tuple]:
    data = Path(get_settings().test_data)
    if name == "mitcmu":
        root = data / "detection_mitcmu"
        return [
            (str(root / "test_jpg" / k), v, np.zeros((0, 4), np.float32), None)
            for k, v in sorted(mitcmu_boxes(root).items())
            if len(v)
        ]
    out = []
    for k, v in sorted(crowd_labels(split).items()):
        out.append(
            (
                str(data / "fixtures" / k),
                np.asarray(v["faces"], np.float32).reshape(-1, 4),
                np.asarray(v.get("ignore", []), np.float32).reshape(-1, 4),
                None,
            )
        )
    return border_cuts(out) if name == "border" else out


def evaluate(detectors: dict, items, *, set_name: str) -> dict[str, dict]:
    """Run each `detect(rgb) -> Detections` of `detectors` on each image (decoded as the pipeline decodes it) and
    score it. The detectors take turns on each image, so a busy machine slows them alike."""
    rows: dict[str, list] = {k: [] for k in detectors}
    ms: dict[str, list] = {k: [] for k in detectors}
    cmu = set_name == "mitcmu"
    for path, gt, ign, crop in items:
        rgb, scale = decode(path, crop)
        for name, detect in detectors.items():
            t0 = time.perf_counter()
            det = detect(rgb)
            ms[name].append((time.perf_counter() - t0) * 1000)
            order = np.argsort(-det.scores, kind="stable")
            boxes = det.boxes[order] * scale
            rows[name].append(match(gt, ign, boxes, min_iou=0.3 if cmu else 0.5, centres=cmu))
    return {k: summarise(rows[k], ms[k]) for k in detectors}


def table(results: dict[tuple[str, str], dict]) -> str:
    lines = [
        "| setting | set | images | faces (>= 32 px) | recall | recall >= 32 px | precision | dets / face "
        "| ms / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (setting, set_name), r in results.items():
        lines.append(
            f"| {setting} | {set_name} | {r['images']} | {r['faces']} ({r['faces_32px']}) | {r['recall']:.3f} | "
            f"{r['recall_32px']:.3f} | {r['precision']:.3f} | {r['dets_per_face']:.2f} | {r['ms_per_image']:.0f} |"
        )
    return "\n".join(lines)


# --- exploration: every candidate view, cached, then combined ---------------------------------------------------


def candidate_views():
    from enface_batch.models.detector import RetinaFace, YuNet
    from enface_batch.models.fetch import ensure_files
    from enface_batch.models.multiview import View

    paths = ensure_files(["yunet_2023mar_int8bq.onnx", "retinaface_mnet025.onnx"])
    y = YuNet(str(paths["yunet_2023mar_int8bq.onnx"]), threshold=0.3)
    r = RetinaFace(str(paths["retinaface_mnet025.onnx"]), threshold=0.3)
    views = {}
    for name, det in (("Y", y), ("R", r)):
        views[f"{name}640"] = View(det)
        views[f"{name}640f"] = View(det, flip=True)
        views[f"{name}640p"] = View(det, pad=0.1)
        views[f"{name}1280"] = View(det, max_side=1280)
        views[f"{name}1280f"] = View(det, flip=True, max_side=1280)
    return views


def cache_views(items, path: Path) -> dict:
    cache = pickle.loads(path.read_bytes()) if path.exists() else {}
    views = candidate_views()
    for img_path, _, _, crop in items:
        have = cache.setdefault((img_path, crop), {})
        todo = [k for k in views if k not in have]
        if not todo:
            continue
        rgb, scale = decode(img_path, crop)
        for k in todo:
            t0 = time.perf_counter()
            det = views[k].detect(rgb)
            have[k] = (det, (time.perf_counter() - t0) * 1000, scale)
        print(f"cached {img_path} {crop}", file=sys.stderr)
    path.write_bytes(pickle.dumps(cache))
    return cache


def explore(set_name: str, items, cache: dict, combos: dict[str, tuple[list[tuple[str, float]], float, float]]):
    from enface_batch.models.multiview import fuse

    res = {}
    for cname, (parts, fuse_iou, single_min) in combos.items():
        rows, ms = [], []
        for path, gt, ign, crop in items:
            c = cache[(path, crop)]
            dets = []
            for view, thr in parts:
                d, t, scale = c[view]
                dets.append(d.take(np.nonzero(d.scores >= thr)[0]))
            det, votes = fuse(dets, iou=fuse_iou)
            if single_min and len(det):
                det = det.take(np.nonzero((votes > 1) | (det.scores >= single_min))[0])
            ms.append(sum(c[v][1] for v, _ in parts))
            order = np.argsort(-det.scores, kind="stable")
            boxes = det.boxes[order] * scale
            cmu = set_name == "mitcmu"
            rows.append(match(gt, ign, boxes, min_iou=0.3 if cmu else 0.5, centres=cmu))
        res[(cname, set_name)] = summarise(rows, ms)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--explore", action="store_true", help="candidate views on the dev split and CMU+MIT")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/enface-detection-views.pkl"))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--write", action="store_true", help=f"run both and write {REPORT.relative_to(REPORT.parents[2])}")
    args = ap.parse_args(argv)
    if args.write:
        cand = run_explore(args.cache)
        modes = run_modes()
        REPORT.write_text(report_text(cand, modes))
        REPORT.with_suffix(".json").write_text(
            json.dumps({"candidates_dev": _flat(cand), "modes": _flat(modes)}, indent=2) + "\n"
        )
        print(REPORT.read_text())
        return
    if args.explore:
        print(table(run_explore(args.cache)))
        return
    res = run_modes()
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(_flat(res), indent=2) + "\n")


def _flat(res: dict) -> dict:
    return {f"{k[0]} / {k[1]}": v for k, v in res.items()}


def run_explore(cache_path: Path) -> dict:
    sets = {
        "mitcmu": load_set("mitcmu"),
        "crowd-dev": load_set("crowd", "dev"),
        "border-dev": load_set("border", "dev"),
    }
    cache = cache_views([x for v in sets.values() for x in v], cache_path)
    combos = json.loads(os.environ.get("COMBOS", "{}")) or default_combos()
    res = {}
    for name, items in sets.items():
        res.update(explore(name, items, cache, combos))
    return res


def run_modes() -> dict:
    from enface_batch.models import load_pack

    detectors = {}
    for mode in ("fast", "thorough"):
        os.environ["ENFACE_DET_MODE"] = mode
        get_settings.cache_clear()
        det = load_pack().detector
        det.detect(np.zeros((480, 640, 3), np.uint8))
        detectors[mode] = det.detect
    res = {}
    for name, items in (
        ("CMU+MIT", load_set("mitcmu")),
        ("crowd dev", load_set("crowd", "dev")),
        ("crowd report", load_set("crowd", "report")),
        ("border-cut dev", load_set("border", "dev")),
        ("border-cut report", load_set("border", "report")),
    ):
        for mode, r in evaluate(detectors, items, set_name="mitcmu" if name == "CMU+MIT" else "crowd").items():
            res[(mode, name)] = r
            print(f"{mode} {name}: {r}", file=sys.stderr)
    return dict(sorted(res.items(), key=lambda kv: kv[0][0] != "fast"))


def report_text(cand: dict, modes: dict) -> str:
    return "\n".join(
        [
            "# Detection: fast and thorough (ENFACE_DET_MODE)",
            "",
            "Written by `python bench/detection_eval.py --write` (labels and matching rules: the script's docstring; "
            "crowd labels: bench/labels/crowd_faces.json). ms / image: the detector alone (with the landmark "
            "refiner), the two modes taking turns on each image; the machine's 2 cores were shared with other jobs.",
            "",
            "## Per setting",
            "",
            table(modes),
            "",
            "## Candidates, on dev data only (thresholds and views were chosen here)",
            "",
            "Views cached once per image; ms / image is the sum of the views' own times (no landmark refiner).",
            "",
            table(cand),
            "",
        ]
    )


def default_combos() -> dict:
    """Candidate settings: (views with their score thresholds, fusion IoU, score a box seen by one view needs).
    Y = YuNet, R = RetinaFace; 640/1280 = longest side; f = mirror image; p = 10 % padded border."""
    return {
        "Y640 t.6 (fast)": ([("Y640", 0.6)], 0.4, 0),
        "Y640 t.5": ([("Y640", 0.5)], 0.4, 0),
        "Y640p t.6": ([("Y640p", 0.6)], 0.4, 0),
        "Y640+f t.6": ([("Y640", 0.6), ("Y640f", 0.6)], 0.4, 0),
        "Y640+p t.6": ([("Y640", 0.6), ("Y640p", 0.6)], 0.4, 0),
        "R640 t.6": ([("R640", 0.6)], 0.4, 0),
        "Y640+R640 t.6/.9": ([("Y640", 0.6), ("R640", 0.9)], 0.4, 0),
        "Y640+R640p t.6/.9": ([("Y640", 0.6), ("R640p", 0.9)], 0.4, 0),
        "Y640+f+R640p t.6/.9": ([("Y640", 0.6), ("Y640f", 0.6), ("R640p", 0.9)], 0.4, 0),
        "Y640+f+R640p t.6/.8 (thorough)": ([("Y640", 0.6), ("Y640f", 0.6), ("R640p", 0.8)], 0.4, 0),
        "Y640+f+R640+f t.6/.9": ([("Y640", 0.6), ("Y640f", 0.6), ("R640", 0.9), ("R640f", 0.9)], 0.4, 0),
        "Y1280 t.6": ([("Y1280", 0.6)], 0.4, 0),
        "Y640+Y1280 t.6/.7": ([("Y640", 0.6), ("Y1280", 0.7)], 0.4, 0),
        "Y640+f+R640p+Y1280 t.6/.8/.7": ([("Y640", 0.6), ("Y640f", 0.6), ("R640p", 0.8), ("Y1280", 0.7)], 0.4, 0),
    }


if __name__ == "__main__":
    main()
