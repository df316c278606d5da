"""Side by side on one folder of real photos: (a) face_recognition's CLI, (b) our scan flow, (c) the floor.

    python bench/throughput.py [--lfw N] [--runner threads|processes|dask] [--skip-peer] [--features gender,age]

The folder (built in a temp dir, outside the repo) holds every fixture photo the peer can read (JPEG/PNG: the
deepface phone photos, couples, class photos and crowds, dlib and face_recognition examples, scenes without
faces) and all 3,811 lfw_dev photos (--lfw N keeps the first N, for a quick look). Figures:
(a) `face_recognition KNOWN FOLDER --cpus 2` (dlib HOG detector + ResNet embeddings), installed into its own
    venv by this script on top of `dlib-bin` (no dlib build);
(b) `enface run` (the scan flow, default pack, auto-enrolment on, no attributes: face_recognition computes none
    either; --features gender,age adds them) over the same folder into a fresh lake;
    wall time of the whole command, and of the flow's own loop (summary seconds, without Prefect's temporary
    server start-up and model loading; the threads runner analyses the first chunks while that server starts,
    flows/head_start.py, so (b') leaves out those chunks' analysis and is an upper bound of the loop's rate);
(c) the floor: per image, decode plus the models' own inference, measured alone in one process on one core,
    scaled to all cores (perfect scaling assumed).
Peak memory is the largest resident set of the command and its children.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from enface_batch.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]

PEER_VENV = Path(os.environ.get("ENFACE_PEER_VENV", Path(tempfile.gettempdir()) / "enface-peer-venv"))


PEER_SUFFIXES = (".jpg", ".jpeg", ".png")  # what face_recognition's CLI reads; both sides get the same files


def build_folder(dest: Path, lfw: int | None = None) -> list[Path]:
    """Every fixture photo (phone photos, couples, class photos, crowds, scenes without faces) and lfw_dev."""
    data = Path(get_settings().test_data)
    fx = data / "fixtures"
    for p in sorted(fx.rglob("*")):
        if p.suffix.lower() in PEER_SUFFIXES and not any(part.startswith(".") for part in p.parts):
            shutil.copy(p, dest / "_".join(p.relative_to(fx).parts))
    for p in sorted((data / "lfw_dev/images").glob("*/*.jpg"))[:lfw]:
        shutil.copy(p, dest / p.name)
    return sorted(dest.iterdir())


def peer_cli() -> Path:
    exe = PEER_VENV / "bin" / "face_recognition"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        pip = [str(PEER_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run(
            [*pip, "dlib-bin", "face_recognition_models", "setuptools", "Click", "numpy", "Pillow"], check=True
        )
        subprocess.run([*pip, "--no-deps", "face_recognition"], check=True)
    return exe


def timed(cmd: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr[-2000:]}")
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return wall, peak, p.stdout


def floor(images: list[Path], features: list[str]) -> tuple[float, int]:
    """CPU seconds per image of decode + inference alone, one thread, and faces found."""
    from enface_batch import imaging
    from enface_batch.analyze import Analyzer
    from enface_batch.models import load_pack

    an = Analyzer(load_pack(threads=1))
    an.analyze_images([imaging.load(str(images[0]), max_side=an.decode_max_side)], features=features)
    faces = 0
    t0 = time.process_time()
    for p in images:
        try:
            img = imaging.load(str(p), max_side=an.decode_max_side)
        except imaging.ImageError:
            continue
        faces += sum(len(r.faces) for r in an.analyze_images([img], features=features, multi=True))
    return (time.process_time() - t0) / len(images), faces


def make_source(lake_uri: str, folder: str, features: list[str]) -> None:
    from enface_batch.lake.store import Lake
    from enface_batch.ops import catalog

    lake = Lake(lake_uri)
    lst = catalog.create_list(lake, "people")["list_id"]
    group = catalog.create_group(lake, "bench", [lst])["group_id"]
    catalog.create_source(
        lake,
        "bench",
        group,
        uri=folder,
        new_person_threshold="no_match",
        new_person_square_min=50,
        person_list_add=[lst],
        feature_check=features,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", type=int, default=None, help="lfw_dev photos to add (default: all 3,811)")
    ap.add_argument("--runner", default="threads", help="the scan flow's runner (threads is `enface run`'s default)")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-floor", action="store_true", help="no (c) row (a GPU run: the floor is per CPU core)")
    ap.add_argument("--features", default="", help="e.g. gender,age (default: none, like the peer)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder, known = Path(tmp) / "photos", Path(tmp) / "known"
        folder.mkdir()
        known.mkdir()
        images = build_folder(folder, args.lfw)
        shutil.copy(Path(get_settings().test_data) / "fixtures/face_recognition_examples/examples/obama.jpg", known)
        mb = sum(p.stat().st_size for p in images) / 1e6
        print(f"# throughput on {len(images)} photos ({mb:.0f} MB), {cores} cores\n")
        rows = []
        if not args.skip_peer:
            wall, peak, out = timed([str(peer_cli()), "--cpus", str(cores), str(known), str(folder)])
            faces = sum(1 for line in out.splitlines() if "," in line and "no_persons_found" not in line)
            rows.append((f"(a) face_recognition --cpus {cores}", wall, len(images) / wall, faces / wall, peak))
        lake = Path(tmp) / "lake"
        enface = [sys.executable, "-m", "enface_batch"]
        feats = [f for f in args.features.split(",") if f]
        make_source(str(lake), str(folder), feats)
        wall, peak, out = timed([*enface, "run", "--lake", str(lake), "--runner", args.runner, "--workers", str(cores)])
        summary = json.loads(out.strip().splitlines()[-1])["sources"][0]
        rows.append((f"(b) enface run --runner {args.runner}", wall, len(images) / wall, summary["faces"] / wall, peak))
        loop = summary["seconds"]
        rows.append(("(b') same, flow loop only", loop, summary["images_new"] / loop, summary["faces"] / loop, peak))
        if not args.skip_floor:
            per_image, faces = floor(images, feats)
            rows.append(
                (
                    "(c) floor: decode + inference alone",
                    per_image * len(images) / cores,
                    cores / per_image,
                    faces * cores / (per_image * len(images)),
                    float("nan"),
                )
            )
        print("| pipeline | seconds | images/s | faces/s | peak RSS MB |\n|---|---|---|---|---|")
        for name, sec, ips, fps, peak in rows:
            print(f"| {name} | {sec:.1f} | {ips:.2f} | {fps:.1f} | {peak:.0f} |")
        rate = {r[0].split(" ", 1)[0]: r[2] for r in rows}
        print()
        if "(a)" in rate:
            print(f"b/a = {rate['(b)'] / rate['(a)']:.2f}x (images/s)")
        loop_rate = rate["(b')"]
        if not args.skip_floor:
            print(f"c/b = {rate['(c)'] / rate['(b)']:.2f}x; c/b' = {rate['(c)'] / loop_rate:.2f}x")


if __name__ == "__main__":
    main()
