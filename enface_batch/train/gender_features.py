"""Cache Cydral gender-v1's block for the attribute network, beside the attr_v2 cache.

"genp": its probabilities, "genf": its last conv map pooled, "genh": its 16-unit hidden layer.

A second input block for the attribute network: gender-v1 reads a dlib face chip (padding 0.2, 32 px), which
keeps more of the hair and head outline than SFace's 112 px ArcFace crop. Same pipeline and central-face rule
as train/features.py (detector + refiner, face and mirror averaged); stored per split in shards aligned by image
name with the attr_v2 shards, under <model cache>/../bench/attr_v2_gender/<split>/. Only this block is computed:
the attr_v2 cache is reused as it is.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..models.align import chip_crop
from ..models.fetch import ensure_files
from ..models.heads import FaceFeatures, _with_outputs
from ..models.session import Model
from ..settings import get_settings
from .features import SHARD, _central, split_rows

VERSION = "attr_v2_gender"
GENDER_POOL = "layer_6_averagepool"  # last conv map after a 2x2 pool; pooled globally here
GENDER_HIDDEN = "layer_3_relu"  # the 16-unit fully connected layer before the logits


def cache_dir(split: str) -> Path:
    return Path(get_settings().model_cache).parent / "bench" / VERSION / split


def _extract(split: str, first: int, last: int, pack, gender: Model, chunk: int = 32) -> dict[str, np.ndarray]:
    from .. import imaging

    root = Path(get_settings().test_data) / "fairface"
    rows = split_rows(root, split)
    got: dict[str, list] = {"genp": [], "genf": [], "genh": [], "image": []}
    for start in range(first, last, chunk):
        chips, names = [], []
        for i in range(start, min(start + chunk, last)):
            rgb = imaging.load(str(root / rows[i]["image"])).rgb
            det = pack.detector.detect(rgb)
            j = _central(det.boxes, rgb.shape[1], rgb.shape[0])
            if j is not None:
                chips.append(chip_crop(rgb, det.kps[j], 32))
                names.append(rows[i]["image"])
        if not names:
            continue
        n = len(names)
        c = np.stack(chips)
        c = np.concatenate([c, c[:, :, ::-1]]).astype(np.float32)
        p, f, h = gender.run(np.ascontiguousarray(((c - FaceFeatures.CYDRAL_MEAN) / 256.0).transpose(0, 3, 1, 2)))
        f = f.mean((2, 3))
        for key, v in (("genp", p), ("genf", f), ("genh", h.reshape(2 * n, -1))):
            got[key].append(((v[:n] + v[n:]) / 2).astype(np.float32))
        got["image"] += names
    return {k: np.concatenate(v) if k != "image" else np.array(v) for k, v in got.items()}


def extract_split(split: str, *, every: int = 1, threads: int | None = None, log=print) -> None:
    """Compute the missing shards of one split (every k-th shard only with every=k, to bound the time)."""
    from ..models import load_pack

    root = Path(get_settings().test_data) / "fairface"
    n = len(split_rows(root, split))
    pack = load_pack("embedded", threads=threads)
    path = ensure_files(["cydral_gender_v1.onnx"])["cydral_gender_v1.onnx"]
    gender = Model(_with_outputs(path, [GENDER_POOL, GENDER_HIDDEN]), threads=threads)
    for k, start in enumerate(range(0, n, SHARD)):
        out = cache_dir(split) / f"{start:05d}"
        if k % every or (out / "done").exists():
            continue
        t0 = time.time()
        got = _extract(split, start, min(n, start + SHARD), pack, gender)
        out.mkdir(parents=True, exist_ok=True)
        for key, v in got.items():
            np.save(out / f"{key}.npy", v)
        (out / "done").write_text("ok\n")
        log(f"{split} [{start}, {min(n, start + SHARD)}): {len(got['image'])} faces in {time.time() - t0:.0f}s")


def load(split: str) -> dict[str, np.ndarray]:
    """The cached gender blocks of one split, keyed by image name -> row (empty when nothing is cached)."""
    parts = [
        {p.stem: np.load(p) for p in sorted(d.glob("*.npy"))}
        for d in sorted(cache_dir(split).glob("*"))
        if (d / "done").exists()
    ]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


if __name__ == "__main__":
    import sys

    every = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    extract_split(sys.argv[1], every=every, log=lambda m: print(m, flush=True))
