"""Cache the wide aligned crops the wide-crop attribute CNN is trained on, once, as uint8.

Same pipeline and central-face rule as train/features.py (shipped detector + landmark refiner), then the
5-landmark similarity transform to models/align.WIDE_TEMPLATE: the face fills about 75 % of a 64 px square, so
hair, ears, neck and some background show (what SFace's tight crop leaves out). Stored per split under
<model cache>/../bench/wide_v1/<split>/ as crops.npy [N, 64, 64, 3] uint8 (RGB) plus image.npy, race.npy,
gender.npy, age.npy. Images with no face are dropped. Cost: about 5 ms per image on one core (FairFace crops
are small).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..models.align import WIDE_SIZE, wide_crop
from ..models.attributes import AGE_BINS, RACES
from ..settings import get_settings
from .features import _central, split_rows

VERSION = "wide_v1"


def cache_dir(split: str) -> Path:
    return Path(get_settings().model_cache).parent / "bench" / VERSION / split


def extract_split(split: str, *, threads: int | None = 1, log=print) -> dict[str, np.ndarray]:
    """The cached wide crops of one split (computed first when absent)."""
    from .. import imaging
    from ..models import load_pack

    out = cache_dir(split)
    if not (out / "done").exists():
        root = Path(get_settings().test_data) / "fairface"
        rows = split_rows(root, split)
        pack = load_pack("embedded", threads=threads)
        crops, kept, t0 = [], [], time.time()
        for i, row in enumerate(rows):
            rgb = imaging.load(str(root / row["image"])).rgb
            det = pack.detector.detect(rgb)
            j = _central(det.boxes, rgb.shape[1], rgb.shape[0])
            if j is not None:
                crops.append(wide_crop(rgb, det.kps[j]))
                kept.append(i)
            if (i + 1) % 2000 == 0:
                log(f"{split}: {i + 1}/{len(rows)} images, {time.time() - t0:.0f}s")
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "crops.npy", np.stack(crops).astype(np.uint8).reshape(-1, WIDE_SIZE, WIDE_SIZE, 3))
        np.save(out / "image.npy", np.array([rows[i]["image"] for i in kept]))
        np.save(out / "race.npy", np.array([RACES.index(rows[i]["race"]) for i in kept]))
        np.save(out / "gender.npy", np.array([int(rows[i]["gender"] == "Male") for i in kept]))
        np.save(out / "age.npy", np.array([AGE_BINS.index(rows[i]["age"]) for i in kept]))
        (out / "done").write_text("ok\n")
        log(f"{split}: {len(kept)} faces of {len(rows)} images in {time.time() - t0:.0f}s -> {out}")
    return {p.stem: np.load(p) for p in sorted(out.glob("*.npy"))}


if __name__ == "__main__":
    import sys

    for sp in sys.argv[1:] or ["train", "train_extra", "val"]:
        extract_split(sp, log=lambda m: print(m, flush=True))
