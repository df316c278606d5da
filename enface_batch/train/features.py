"""Cache what the registry trunks compute on every FairFace crop, once, for training the attribute network.

Each image goes through the shipped pipeline (detector + landmark refiner, the central face, ArcFace / dlib-chip
alignment), then SFace and Cydral age-v1 run on the face and its mirror image. Stored per split under
<model cache>/../bench/attr_v2/<split>/, one .npy per block (the face and mirror averaged):
  * "s14": SFace's conv_14_relu map [N, 1024, 7, 7] as float16 (the mirror's map flipped back before averaging);
    the attribute branch reads it at run time, so training sees exactly what inference sees;
  * "emb", "c14", "m13", "m12", "agep", "agef": the pooled blocks the linear heads read (models/heads.py);
  * "race", "gender", "age" labels and "image" names. Images with no face are dropped.
Only train splits are ever read by training; val is extracted for bench/accuracy.py's comparison only.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from ..models.align import arcface_crop, chip_crop
from ..models.attributes import AGE_BINS, RACES
from ..models.fetch import ensure_files
from ..models.heads import FaceFeatures, _with_outputs
from ..models.session import Model
from ..settings import get_settings

VERSION = "attr_v2"
SPATIAL = "conv_14_relu"


def split_rows(root: Path, split: str) -> list[dict]:
    """Label rows of a FairFace split: "train" / "val" from labels.csv, "train_extra" from its own CSV."""
    name = "labels_train_extra.csv" if split == "train_extra" else "labels.csv"
    with open(root / name, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["image"].startswith(split + "/")]


def cache_dir(split: str) -> Path:
    return Path(get_settings().model_cache).parent / "bench" / VERSION / split


def _central(boxes: np.ndarray, w: int, h: int) -> int | None:
    if not len(boxes):
        return None
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - w / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2
    return int(np.argmin(np.hypot(cx, cy)))


SHARD = 500  # images per cached shard: an interrupted extraction keeps every finished shard


def extract_split(
    split: str, *, threads: int | None = None, chunk: int = 32, cached_only: bool = False, log=print
) -> dict[str, np.ndarray]:
    """The cached blocks of one split, shard by shard (missing shards are computed unless cached_only)."""
    root = Path(get_settings().test_data) / "fairface"
    n = len(split_rows(root, split))
    parts = []
    for start in range(0, n, SHARD):
        out_dir = cache_dir(split) / f"{start:05d}"
        done = out_dir / "done"
        if not done.exists():
            if cached_only:
                continue
            _extract(split, out_dir, start, min(n, start + SHARD), threads=threads, chunk=chunk, log=log)
            done.write_text("ok\n")
        parts.append({p.stem: np.load(p) for p in sorted(out_dir.glob("*.npy"))})
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


_models: tuple | None = None  # (pack, sface, age), loaded once per process


def _load_models(threads: int | None) -> tuple:
    from ..models import load_pack

    pack = load_pack("embedded", threads=threads)
    files = ensure_files(["sface_2021dec.onnx", "cydral_age_v1.onnx"])
    maps = list(FaceFeatures.SFACE_MAPS.values())
    sface = Model(_with_outputs(files["sface_2021dec.onnx"], [*maps, SPATIAL]), threads=threads)
    age = Model(_with_outputs(files["cydral_age_v1.onnx"], [FaceFeatures.AGE_POOL]), threads=threads)
    return pack, sface, age


def _extract(split: str, out_dir: Path, first: int, last: int, *, threads: int | None, chunk: int, log) -> None:
    global _models
    from .. import imaging

    root = Path(get_settings().test_data) / "fairface"
    rows = split_rows(root, split)
    if _models is None:
        _models = _load_models(threads)
    pack, sface, age = _models
    names = sface.output_names
    blocks: dict[str, list[np.ndarray]] = {}
    kept: list[int] = []
    t0 = time.time()
    for start in range(first, last, chunk):
        rgbs, kps, idx = [], [], []
        for i in range(start, min(start + chunk, last)):
            rgb = imaging.load(str(root / rows[i]["image"])).rgb
            det = pack.detector.detect(rgb)
            j = _central(det.boxes, rgb.shape[1], rgb.shape[0])
            if j is not None:
                rgbs.append(rgb)
                kps.append(det.kps[j])
                idx.append(i)
        if not idx:
            continue
        n = len(idx)
        arc = np.stack([arcface_crop(r, k) for r, k in zip(rgbs, kps, strict=True)])
        arc = np.concatenate([arc, arc[:, :, ::-1]]).astype(np.float32).transpose(0, 3, 1, 2)
        res = dict(zip(names, sface.run(np.ascontiguousarray(arc)), strict=True))
        emb = res[names[0]]
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        got = {"emb": (emb[:n] + emb[n:]) / 2}
        for key, name in FaceFeatures.SFACE_MAPS.items():
            pooled = res[name].mean((2, 3))
            got[key] = (pooled[:n] + pooled[n:]) / 2
        s = res[SPATIAL]
        got["s14"] = ((s[:n] + s[n:, :, :, ::-1]) / 2).astype(np.float16)
        chip = np.stack([chip_crop(r, k, 64) for r, k in zip(rgbs, kps, strict=True)])
        chip = np.concatenate([chip, chip[:, :, ::-1]]).astype(np.float32)
        agep, agef = age.run(np.ascontiguousarray(((chip - FaceFeatures.CYDRAL_MEAN) / 256.0).transpose(0, 3, 1, 2)))
        agef = agef.reshape(2 * n, -1)
        got["agep"], got["agef"] = (agep[:n] + agep[n:]) / 2, (agef[:n] + agef[n:]) / 2
        for k, v in got.items():
            blocks.setdefault(k, []).append(v.astype(np.float16 if k == "s14" else np.float32))
        kept += idx
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, v in blocks.items():
        np.save(out_dir / f"{k}.npy", np.concatenate(v))
    np.save(out_dir / "image.npy", np.array([rows[i]["image"] for i in kept]))
    np.save(out_dir / "race.npy", np.array([RACES.index(rows[i]["race"]) for i in kept]))
    np.save(out_dir / "gender.npy", np.array([int(rows[i]["gender"] == "Male") for i in kept]))
    np.save(out_dir / "age.npy", np.array([AGE_BINS.index(rows[i]["age"]) for i in kept]))
    log(f"{split} [{first}, {last}): {len(kept)} faces in {time.time() - t0:.0f}s -> {out_dir}")


if __name__ == "__main__":
    import sys

    for sp in sys.argv[1:] or ["train", "train_extra", "val"]:
        extract_split(sp, log=lambda m: print(m, flush=True))
