"""Cache aligned face views of every FairFace crop, once, as uint8, for fine-tuning a pretrained trunk.

Same pipeline and central-face rule as train/features.py (shipped detector + landmark refiner). Each view is a
5-landmark similarity warp to a template at a size, cached with a margin on every side so that training can
shift, rotate and scale the view without replicated borders (evaluation takes the centre):
  * "wide": the wide view at 64 px (models/align.wide_crop: the ArcFace template shrunk to 75 % and moved up,
    so hair, ears, neck and some background show), which the wide-crop CNN reads (train/wide_net.py);
  * "chip": Cydral's dlib chip (models/align.DLIB_CHIP) at 64 px, the geometry Cydral age-v1 was trained on;
  * "wide96": the wide view (models/align.WIDE_TEMPLATE: hair, ears, neck) at 96 px, where the eyes are about
    as far apart in pixels as on the 64 px chip, so a trunk pretrained on chips sees faces at its scale;
  * "arc": SFace's ArcFace crop at 112 px (train/sface_blocks.py --augment).
Stored under <model cache>/../bench/views_v1/<split>/ as <view>.npy [N, S + 2 * MARGIN, S + 2 * MARGIN, 3]
(RGB) plus image.npy, race.npy, gender.npy, age.npy. Images with no face are dropped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..models.align import ARCFACE_112, DLIB_CHIP, WIDE_TEMPLATE, warp
from ..models.attributes import AGE_BINS, RACES
from ..settings import get_settings
from .features import _central, split_rows

VERSION = "views_v3"
MARGIN = 8
VIEWS = {
    "wide": (WIDE_TEMPLATE, 64),
    "chip": (DLIB_CHIP, 64),
    "wide96": (WIDE_TEMPLATE, 96),
    "arc": (ARCFACE_112 / 112.0, 112),
}


def cache_dir(split: str) -> Path:
    return Path(get_settings().model_cache).parent / "bench" / VERSION / split


def view(rgb: np.ndarray, kps: np.ndarray, name: str, margin: int = 0) -> np.ndarray:
    """The named view of a face, with `margin` pixels of context on every side (0: as the network reads it)."""
    template, size = VIEWS[name]
    return warp(rgb, kps, template * size + margin, size + 2 * margin)


def extract_split(split: str, *, threads: int | None = 1, log=print) -> dict[str, np.ndarray]:
    """The cached views of one split (computed first when absent)."""
    from .. import imaging
    from ..models import load_pack

    out = cache_dir(split)
    if not (out / "done").exists():
        root = Path(get_settings().test_data) / "fairface"
        rows = split_rows(root, split)
        pack = load_pack("embedded", threads=threads)
        views: dict[str, list] = {v: [] for v in VIEWS}
        kept, t0 = [], time.time()
        for i, row in enumerate(rows):
            rgb = imaging.load(str(root / row["image"])).rgb
            det = pack.detector.detect(rgb)
            j = _central(det.boxes, rgb.shape[1], rgb.shape[0])
            if j is not None:
                for v in VIEWS:
                    views[v].append(view(rgb, det.kps[j], v, MARGIN))
                kept.append(i)
            if (i + 1) % 2000 == 0:
                log(f"{split}: {i + 1}/{len(rows)} images, {time.time() - t0:.0f}s")
        out.mkdir(parents=True, exist_ok=True)
        for v, crops in views.items():
            np.save(out / f"{v}.npy", np.stack(crops).astype(np.uint8))
        np.save(out / "image.npy", np.array([rows[i]["image"] for i in kept]))
        np.save(out / "race.npy", np.array([RACES.index(rows[i]["race"]) for i in kept]))
        np.save(out / "gender.npy", np.array([int(rows[i]["gender"] == "Male") for i in kept]))
        np.save(out / "age.npy", np.array([AGE_BINS.index(rows[i]["age"]) for i in kept]))
        (out / "done").write_text("ok\n")
        log(f"{split}: {len(kept)} faces of {len(rows)} images in {time.time() - t0:.0f}s -> {out}")
    return {p.stem: np.load(p, mmap_mode="r") for p in sorted(out.glob("*.npy"))}


if __name__ == "__main__":
    import sys

    for sp in sys.argv[1:] or ["train", "train_extra", "val"]:
        extract_split(sp, log=lambda m: print(m, flush=True))
