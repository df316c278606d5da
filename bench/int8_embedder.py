"""int8 SFace (onnxruntime static quantisation) against the fp32 file, side by side in one run.

    python bench/int8_embedder.py [--variants qdq_conv,qdq_all,qop_all] [--crops FILE.npz]

Calibration: faces of the registry's demo photos only (bench/sface_quantize.py). Check: lfw_dev 5-fold verification
on the central face's aligned crop (detected once, embedded by every variant), the cosine of each variant's
embeddings to fp32's, and the embedder alone in ms per face at 1 and 2 threads (batches of 8, best of 3,
variants interleaved so load changes hit all alike).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sface_quantize import calibration_crops, quantize_sface

from enface_batch import imaging
from enface_batch.evaluation import lfw_pairs, verification_folds
from enface_batch.models import load_pack
from enface_batch.models.align import arcface_crop
from enface_batch.models.embedder import SFace
from enface_batch.models.fetch import cache_dir
from enface_batch.settings import get_settings

VARIANTS = {
    "qdq_conv": {"fmt": "qdq", "ops": ("Conv", "Gemm")},
    "qdq_all": {"fmt": "qdq", "ops": None},
    "qop_all": {"fmt": "qop", "ops": None},
}


def lfw_crops(detect) -> tuple[list[str], np.ndarray]:
    """The aligned crop of the face nearest the centre of every lfw_dev image that has one."""
    root = Path(get_settings().test_data) / "lfw_dev"
    keep, crops = [], []
    for p in sorted(root.glob("images/*/*.jpg")):
        img = imaging.load(str(p))
        det = detect(img.rgb)
        if not len(det):
            continue
        h, w = img.rgb.shape[:2]
        centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
        i = int(np.argmin(np.hypot(centres[:, 0] - w / 2, centres[:, 1] - h / 2)))
        keep.append(str(p))
        crops.append(arcface_crop(img.rgb, det.kps[i]))
    return keep, np.stack(crops)


def lfw_accuracy(paths: list[str], emb: np.ndarray) -> float:
    root = Path(get_settings().test_data) / "lfw_dev"
    pairs = lfw_pairs(root)
    row = {p: i for i, p in enumerate(paths)}
    sims = np.array(
        [float(emb[row[p.a]] @ emb[row[p.b]]) if p.a in row and p.b in row else -1.0 for p in pairs], np.float64
    )
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    return float(np.mean([acc for _, acc in verification_folds(sims, same, folds)]))


def embed_all(model: SFace, crops: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([model.embed(crops[i : i + batch]) for i in range(0, len(crops), batch)])


def speed(files: dict[str, str], crops: np.ndarray, threads: int) -> dict[str, float]:
    ems = {k: SFace(v, threads=threads) for k, v in files.items()}
    for e in ems.values():
        e.embed(crops[:8])
    best = dict.fromkeys(ems, float("inf"))
    for _ in range(3):
        for k, e in ems.items():
            t0 = time.perf_counter()
            for i in range(0, len(crops), 8):
                e.embed(crops[i : i + 8])
            best[k] = min(best[k], (time.perf_counter() - t0) / len(crops) * 1000)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="qdq_conv,qdq_all,qop_all")
    ap.add_argument("--crops", default="", help="npz cache of the lfw_dev crops (made if missing)")
    ap.add_argument("--speed-faces", type=int, default=160)
    args = ap.parse_args()
    pack = load_pack(threads=1)
    root = cache_dir()
    src = root / "sface_2021dec.onnx"
    tmp = Path(tempfile.mkdtemp(prefix="enface-int8-"))
    calib = calibration_crops(pack.detector.detect, [root / "demo/t1.jpg", root / "demo/Tom_Hanks_54745.png"])
    print(f"calibration: {len(calib)} crops from the demo photos")
    files = {"fp32": str(src)}
    for name in args.variants.split(","):
        v = VARIANTS[name]
        quantize_sface(src, tmp / f"{name}.onnx", calib, op_types=v["ops"], fmt=v["fmt"])
        files[name] = str(tmp / f"{name}.onnx")
    cache = Path(args.crops) if args.crops else None
    if cache and cache.exists():
        z = np.load(cache)
        paths, crops = [str(p) for p in z["paths"]], z["thumbs"]
    else:
        paths, crops = lfw_crops(pack.detector.detect)
        if cache:
            np.savez(cache, paths=np.array(paths), thumbs=crops)
    print(f"lfw_dev: {len(paths)} images with a face\n")
    embs = {k: embed_all(SFace(f, threads=1), crops) for k, f in files.items()}
    sp1 = speed(files, crops[: args.speed_faces], 1)
    sp2 = speed(files, crops[: args.speed_faces], 2)
    print("| embedder | lfw_dev accuracy | cos to fp32 min / mean | ms/face 1 thread | ms/face 2 threads |")
    print("|---|---:|---:|---:|---:|")
    for k, e in embs.items():
        cos = (e * embs["fp32"]).sum(1)
        print(
            f"| {k} | {lfw_accuracy(paths, e) * 100:.2f} % | {cos.min():.3f} / {cos.mean():.4f} "
            f"| {sp1[k]:.2f} | {sp2[k]:.2f} |"
        )


if __name__ == "__main__":
    main()
