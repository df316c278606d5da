"""The scan flow's throughput per task runner over one real folder, and the cost of re-running it unchanged.

    python bench/scan_throughput.py [--folder DIR] [--runners threads,processes,dask] [--rerun-files 10000]

Part 1: for each runner, a fresh lake and source over the same folder (default: deepface_tests/images and
group_photos from ../shared/data, 109 real photos), one full scan flow run; images/s counts analysed images
over the flow's wall time including model loading in the workers (printed apart: the writer's summary time).
Part 2: an archive of N files already scanned (files and images tables filled as a scan leaves them) is
planned again: listing, reading the files table, comparing; no file is read, nothing is analysed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from enface_batch.lake.store import Lake, now
from enface_batch.ops import catalog
from enface_batch.scan_plan import list_files, plan
from enface_batch.settings import get_settings


def make_source(lake: Lake, uri: str) -> str:
    lst = catalog.create_list(lake, "people")["list_id"]
    group = catalog.create_group(lake, "bench", [lst])["group_id"]
    return catalog.create_source(
        lake,
        "bench",
        group,
        uri=uri,
        new_person_threshold="no_match",
        new_person_square_min=50,
        person_list_add=[lst],
        feature_check=[],  # detect + embed + search + enrol, like bench/throughput.py
    )["source_id"]


def runner_figures(folder: str, runners: list[str], workers: int) -> None:
    from enface_batch.flows.scan import run_scan

    print(f"## scan flow over {folder} ({os.cpu_count()} cores, {workers} workers)\n")
    print("| runner | images | faces | wall s | images/s (wall) | images/s (writer loop) |\n|---|---|---|---|---|---|")
    for runner in runners:
        with tempfile.TemporaryDirectory() as tmp:
            lake = Lake(tmp)
            make_source(lake, folder)
            t0 = time.perf_counter()
            (s,) = run_scan(lake=lake.uri, runner=runner, workers=workers)
            wall = time.perf_counter() - t0
            print(
                f"| {runner} | {s['images_new']} | {s['faces']} | {wall:.1f} | {s['images_new'] / wall:.2f} | "
                f"{s['images_per_second']} |",
                flush=True,
            )


def rerun_figures(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive"
        for i in range(n):
            d = archive / f"{i // 1000:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"img{i:05d}.jpg").write_bytes(b"\xff\xd8" + i.to_bytes(4, "big"))
        lake = Lake(Path(tmp) / "lake")
        sid = make_source(lake, str(archive))
        files = list_files(str(archive))
        run, t = str(uuid.uuid4()), now()
        lake.append(
            "files",
            [
                {
                    "uri": f.uri,
                    "source_id": sid,
                    "sha256": f"{i:064x}",
                    "size_bytes": f.size,
                    "mtime": f.mtime,
                    "run_id": run,
                    "seen": t,
                }
                for i, f in enumerate(files)
            ],
        )
        lake.append(
            "images",
            [
                {
                    "image_sha256": f"{i:064x}",
                    "uri": f.uri,
                    "source_id": sid,
                    "status": "no_faces",
                    "faces": 0,
                    "run_id": run,
                    "scanned": t,
                }
                for i, f in enumerate(files)
            ],
        )
        t0 = time.perf_counter()
        p = plan(lake, sid)
        dt = time.perf_counter() - t0
        print(f"\n## re-run of an unchanged archive of {n:,} files\n")
        print(
            f"plan: {dt:.2f} s ({len(p.unchanged):,} unchanged, {len(p.analyse)} to analyse, "
            f"{sum(len(v) for v in p.aliases.values())} files read)"
        )
        shutil.rmtree(archive)


def main() -> None:
    data = Path(get_settings().test_data) / "fixtures"
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default=None)
    ap.add_argument("--runners", default="threads,processes,dask")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rerun-files", type=int, default=10_000)
    args = ap.parse_args()
    folder = args.folder
    tmp = None
    if folder is None:
        tmp = tempfile.mkdtemp()
        for sub in ("deepface_tests/images", "group_photos"):
            shutil.copytree(data / sub, Path(tmp) / sub.replace("/", "_"))
        folder = tmp
    try:
        if args.runners:
            runner_figures(folder, args.runners.split(","), args.workers)
        if args.rerun_files:
            rerun_figures(args.rerun_files)
    finally:
        if tmp:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
