"""Images/second of `enface detect` on real photos (the same code path as the CLI), on this machine.

    python bench/detect_throughput.py [FOLDER ...] [--features gender,age] [--repeat 1] [--attribute-model net]
    python bench/detect_throughput.py --features gender,age,race --compare-attributes   # heads / branch / net

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
    ap.add_argument(
        "--attribute-model",
        choices=("net", "branch", "heads"),
        default=None,
        help="the embedded pack's attribute network (branch + wide-crop CNN), its branch alone (what shipped "
        "before the wide CNN) or the earlier linear heads (default: what the pack picks)",
    )
    ap.add_argument(
        "--compare-attributes",
        action="store_true",
        help="time the linear heads and the network alternately in one process (ratios survive a busy machine)",
    )
    args = ap.parse_args()
    uris = list(imaging.list_images(args.folders))
    feats = [f for f in args.features.split(",") if f]
    if args.compare_attributes:
        compare(uris, feats, args.repeat)
        return
    t0 = time.perf_counter()
    an = Analyzer(load_pack())
    if args.attribute_model:
        an.pack.attributes.use_net = args.attribute_model != "heads"
        an.pack.attributes._use_wide = args.attribute_model == "net"
    load_s = time.perf_counter() - t0
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


def _timed(an: Analyzer, uris: list[str], feats: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    faces = sum(len(r.faces) for r in an.analyze_uris(uris, features=feats, multi=True))
    return time.perf_counter() - t0, faces


def compare(uris: list[str], feats: list[str], repeat: int) -> None:
    """Wall time per face with no features, the linear heads, the branch alone (the network before the wide-crop
    CNN) and the network (branch + wide-crop CNN), interleaved."""
    an = {m: Analyzer(load_pack()) for m in ("none", "heads", "branch", "net")}
    an["heads"].pack.attributes.use_net = False
    for m in ("branch", "net"):
        an[m].pack.attributes.use_net = True
        an[m].pack.attributes._use_wide = m == "net"
    for m, a in an.items():  # warm-up: first inference allocates, and the attribute models load lazily
        list(a.analyze_uris(uris[:2], features=[] if m == "none" else feats, multi=True))
    wall = {m: 0.0 for m in an}
    faces = 0
    for _ in range(max(1, repeat)):
        for m, a in an.items():
            w, faces = _timed(a, uris, [] if m == "none" else feats)
            wall[m] += w
    print(f"machine: {os.cpu_count()} cores; {len(uris)} images, {faces} faces per pass, {max(1, repeat)} pass(es)")
    print(f"features {feats}; each pass runs no features, the linear heads, the branch, the network, in turn")
    print("| attributes | wall s | ms per face | ms per face over no features |")
    print("|---|---|---|---|")
    per = {m: wall[m] * 1000 / (faces * max(1, repeat)) for m in wall}
    for m in an:
        print(f"| {m} | {wall[m]:.1f} | {per[m]:.1f} | {per[m] - per['none']:.1f} |")
    for base in ("heads", "branch"):
        print(
            f"network / {base}, whole cost per face: {per['net'] / per[base]:.2f}x; attribute part only: "
            f"{(per['net'] - per['none']) / max(per[base] - per['none'], 1e-9):.2f}x"
        )


if __name__ == "__main__":
    main()
