"""The RetinaFace landmark refiner's crop size: lfw_dev verification and refiner CPU time per face, side by side.

    python bench/refiner_crop.py [--crops 160,128,112] [--limit N]

The default pack finds faces with YuNet and re-places their 5 landmarks with RetinaFace run on a square crop
around each face (models/detector.py RefinedDetector); the refiner's cost grows with the crop's area. Per crop
size, in one run: every lfw_dev image through the whole Analyzer with that crop (multi-face, the central face
kept, as bench/lfw_embed.py does), the 10-fold verification accuracy of bench/accuracy.py, the mean landmark
shift against the first size, and the refiner's own CPU ms per face (one thread; the sizes take turns on the
same faces, best of 3). lfw_dev is only reported here, never used to pick a threshold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import verification  # noqa: E402

from enface_batch import imaging  # noqa: E402
from enface_batch.analyze import Analyzer  # noqa: E402
from enface_batch.evaluation import central_face, lfw_pairs  # noqa: E402
from enface_batch.models import load_pack  # noqa: E402
from enface_batch.settings import get_settings  # noqa: E402


def refiner_ms(an: Analyzer, paths: list[str], crops: list[int], reps: int = 3) -> dict[int, float]:
    """CPU ms per face of the refiner alone (crop warp + RetinaFace + decode), sizes interleaved."""
    det = an.pack.detector
    items = []
    for p in paths:
        rgb = imaging.load(p, max_side=an.decode_max_side).rgb
        found = det.primary.detect(rgb)
        if len(found):
            items.append((rgb, found))
    faces = sum(len(f) for _, f in items)
    best = {c: float("inf") for c in crops}
    for _ in range(reps):
        for c in crops:
            det.crop = c
            t0 = time.process_time()
            for rgb, found in items:
                det.refine(rgb, found)
            best[c] = min(best[c], (time.process_time() - t0) * 1000 / max(faces, 1))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crops", default="160,128,112")
    ap.add_argument("--limit", type=int, default=None, help="first N lfw_dev images only (a quick look)")
    args = ap.parse_args()
    crops = [int(c) for c in args.crops.split(",")]
    root = Path(get_settings().test_data) / "lfw_dev"
    if not root.exists():
        sys.exit(f"lfw_dev is not at {root}")
    pairs = lfw_pairs(root)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs} | {str(p) for p in root.glob("images/*/*.jpg")})
    if args.limit:
        paths = paths[: args.limit]
        keep = set(paths)
        pairs = [p for p in pairs if p.a in keep and p.b in keep]
    an = Analyzer(load_pack(threads=1))
    ms = refiner_ms(an, paths[:300], crops)
    rows, first = [], None
    for c in crops:
        an.pack.detector.crop = c
        t0 = time.process_time()
        faces = {res.uri: central_face(res) for res in an.analyze_uris(paths)}
        cpu = (time.process_time() - t0) * 1000 / len(paths)
        emb = {k: (f.embedding if f is not None else None) for k, f in faces.items()}
        kps = {k: np.array(f.landmarks) for k, f in faces.items() if f is not None}
        first = first or kps
        shift = np.mean([np.linalg.norm(kps[k] - first[k], axis=1).mean() for k in kps if k in first])
        ver = verification(pairs, emb)
        rows.append((c, ver["accuracy"], ver["accuracy_std"], ver["no_face"], shift, ms[c], cpu))
        print(f"crop {c}: {ver['accuracy']:.4f}", file=sys.stderr)
    print(f"# refiner crop on lfw_dev: {len(paths)} images, {len(pairs)} pairs\n")
    print("| crop px | lfw_dev accuracy | std | no face | landmark shift px vs first | refiner ms/face | ms/image |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c, acc, std, nf, shift, rms, cpu in rows:
        print(f"| {c} | {acc * 100:.2f} % | {std * 100:.2f} | {nf} | {shift:.2f} | {rms:.2f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
