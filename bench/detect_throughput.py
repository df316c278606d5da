"""Images/second of `enface detect` on real photos (the same code path as the CLI), on this machine.

    python bench/detect_throughput.py [FOLDER ...] [--features gender,age] [--repeat 1]

Default folders: deepface_tests/images (65 photos, many 12+ MP phone shots) and group_photos (44 group photos,
some with 100+ small faces) from ../shared/data. Model loading is timed apart from the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from enface_batch import imaging
from enface_batch.analyze import Analyzer
from enface_batch.models import load_pack
from enface_batch.settings import get_settings


def main() -> None:
    data = Path(get_settings().test_data) / "fixtures"
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="*", default=[str(data / "deepface_tests/images"), str(data / "group_photos")])
    ap.add_argument("--features", default="gender,age")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    uris = list(imaging.list_images(args.folders))
    t0 = time.perf_counter()
    an = Analyzer(load_pack())
    load_s = time.perf_counter() - t0
    feats = [f for f in args.features.split(",") if f]
    list(an.analyze_uris(uris[:2], features=feats, multi=True))  # warm-up: first inference allocates
    t0, cpu0 = time.perf_counter(), time.process_time()
    n_img = n_faces = n_err = 0
    for _ in range(args.repeat):
        for res in an.analyze_uris(uris, features=feats, multi=True):
            n_img += 1
            n_faces += len(res.faces)
            n_err += res.status == "error"
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mpx = sum(os.path.getsize(u) for u in uris) / 1e6
    print(f"machine: {os.cpu_count()} cores; pack {an.pack.version}; features {feats or 'none'}")
    print(f"folders: {', '.join(args.folders)}")
    print(f"images {n_img} ({mpx:.0f} MB of files), faces {n_faces}, errors {n_err}; model load {load_s:.1f}s")
    print(
        f"wall {wall:.1f}s -> {n_img / wall:.2f} images/s, {n_faces / wall:.1f} faces/s; "
        f"CPU {cpu:.1f}s ({cpu / wall:.2f} cores busy); peak RSS {rss:.0f} MB"
    )


if __name__ == "__main__":
    main()
