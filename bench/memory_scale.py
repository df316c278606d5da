"""Peak memory of the scan flow as the archive grows: N images made from real lfw_dev photos.

    python bench/memory_scale.py --sizes 1000,20000 [--runner threads|processes|dask]

Each image is an lfw_dev photo re-encoded with a one-pixel edit that depends on its index, so every file has
its own content hash and none is skipped as a duplicate. Prints, per size: images/s of `enface run` and the
peak resident memory of the command and its workers; flat memory means the peak does not grow with N.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from PIL import Image

from enface_batch.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]


def make_archive(dest: Path, n: int) -> None:
    sources = sorted((Path(get_settings().test_data) / "lfw_dev/images").glob("*/*.jpg"))
    for i in range(n):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        img.putpixel((i % img.width, (i // img.width) % img.height), (i % 256, (i // 256) % 256, 7))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=92)
        sub = dest / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"photo_{i:06d}.jpg").write_bytes(buf.getvalue())


def run(n: int, runner: str, workers: int) -> tuple[float, float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        archive, lake = Path(tmp) / "archive", Path(tmp) / "lake"
        archive.mkdir()
        make_archive(archive, n)
        env = {**os.environ, "ENFACE_DEMO_DIR": str(archive)}
        cli = [sys.executable, "-m", "enface_batch"]
        subprocess.run(
            [*cli, "apply", str(ROOT / "configs/example.yaml"), "--lake", str(lake)],
            env=env,
            check=True,
            capture_output=True,
        )
        cmd = [*cli, "run", "--lake", str(lake), "--runner", runner, "--workers", str(workers)]
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak = 0.0
        while proc.poll() is None:  # the whole tree: the flow process, its workers, Prefect's server
            total = 0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total / 2**20)
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        out = proc.stdout.read().strip().splitlines()
        if proc.returncode != 0 or not out:
            raise RuntimeError(f"enface run failed with exit code {proc.returncode}")
        return wall, peak, json.loads(out[-1])["sources"][0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,20000")
    ap.add_argument("--runner", default="threads")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    print(f"runner {args.runner}, {args.workers} workers\n")
    print("| images | faces | wall s | images/s | peak RSS MB, whole process tree |\n|---|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        wall, peak, summary = run(n, args.runner, args.workers)
        print(
            f"| {n:,} | {summary['faces']:,} | {wall:.0f} | {summary['images_new'] / wall:.2f} | {peak:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
