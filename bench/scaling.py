"""Scaling curve of `enface run --runner dask`: measured with 1 and 2 local worker processes, projected beyond.

    python bench/scaling.py [--lfw 600] [--workers 1,2] [--writer-ceiling IMAGES_PER_S]

A real local Dask cluster (`--runner dask --workers N`: N worker processes, one thread each) scans the same
folder (the first --lfw lfw_dev photos plus every fixture JPEG/PNG, as bench/throughput.py builds it) into a
fresh lake per run. From each run's summary: images analysed, the flow loop's seconds, and the writer's own
seconds in it (search, enrolment, staging, commits: `writer_seconds`), so its busy share.

Projection: a worker analyses `per-worker images/s` (the 2-worker run's rate / 2: each worker had one core,
shared with the writer and the Prefect client), and the single writer takes at most its ceiling (images/s
of one core, from bench/writer_ceiling.py at the list size you expect, or the writer's measured
seconds per image here). N workers give min(N x per-worker, ceiling); the writer saturates at
N = ceiling / per-worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.throughput import build_folder, make_source  # noqa: E402


def run(folder: Path, lake: Path, workers: int) -> dict:
    make_source(str(lake), str(folder), [])
    cmd = [sys.executable, "-m", "enface_batch", "run", "--lake", str(lake), "--runner", "dask"]
    cmd += ["--workers", str(workers)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    s = json.loads(p.stdout.strip().splitlines()[-1])["sources"][0]
    s["wall"] = wall
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=int, default=600)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument(
        "--writer-ceiling", default=None, help="writer images/s on one core, comma list (bench/writer_ceiling.py)"
    )
    ap.add_argument("--per-worker", type=float, default=None, help="skip the runs: project from this rate")
    ap.add_argument("--project", default="8,32,128")
    args = ap.parse_args()
    rows = []
    if args.per_worker:
        rows.append((1, args.per_worker, float("nan")))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        images = build_folder(folder, args.lfw)
        print(f"# dask scaling on {len(images)} photos, {len(os.sched_getaffinity(0))} cores\n")
        print(
            "| workers | images | faces | wall s | loop s | images/s (loop) | per worker | writer s | writer busy "
            "| writer ms/image |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in [] if args.per_worker else [int(w) for w in args.workers.split(",")]:
            s = run(folder, Path(tmp) / f"lake{n}", n)
            rate = s["images_new"] / s["seconds"]
            ms = 1000 * s["writer_seconds"] / max(1, s["images_new"])
            rows.append((n, rate, ms))
            print(
                f"| {n} | {s['images_new']} | {s['faces']} | {s['wall']:.1f} | {s['seconds']:.1f} | {rate:.1f} "
                f"| {rate / n:.1f} | {s['writer_seconds']:.1f} | {s['writer_busy']:.3f} | {ms:.2f} |",
                flush=True,
            )
    n, rate, ms = rows[-1]
    per_worker = rate / n
    # At a few images/s the writer's time per image is mostly the fixed cost of a commit every 10 s spread
    # over few images; under load each commit holds more. Its ceiling is bench/writer_ceiling.py's figure.
    ceilings = [float(c) for c in args.writer_ceiling.split(",")] if args.writer_ceiling else [1000.0 / ms]
    for ceiling in ceilings:
        print(f"\nper worker {per_worker:.1f} images/s; writer ceiling {ceiling:,.0f} images/s")
        print("\n| workers | projected images/s | writer busy |\n|---:|---:|---:|")
        for w in [int(x) for x in args.project.split(",")]:
            got = min(w * per_worker, ceiling)
            print(f"| {w} | {got:,.0f} | {got / ceiling:.2f} |")
        print(f"\nthe writer saturates at ~{ceiling / per_worker:,.0f} workers")


if __name__ == "__main__":
    main()
