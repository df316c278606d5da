"""Lake upkeep: file count and an analyst's query time on a lake after many small incremental runs, before
and after `enface lake optimize` + `enface lake vacuum`.

    python bench/lake_upkeep.py [--runs 200] [--per-run 1] [--repeat 5]

A fresh lake and source; each run copies --per-run new LFW photos (../shared/data/lfw_dev, 250x250, one face
each) into the source folder and scans it with the real writer path (scan.scan_source: plan, analyse with the
real models, search and auto-enrol, commit), as a nightly job that finds a few new photos would. Then:
data files the tables' current versions read, parquet files on disk, and the median time of an analyst's
polars query (faces joined with person_faces: faces per person, with their mean detector score) from a cold
start, before and after optimize + vacuum. The vacuum here uses retention 0 with deltalake's retention check
off, which only a throwaway lake that no reader uses may do (the CLI keeps the tables' 7 days).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from enface_batch.analyze import Analyzer
from enface_batch.lake import upkeep
from enface_batch.lake.schemas import TABLES
from enface_batch.lake.store import Lake
from enface_batch.models import load_pack
from enface_batch.ops import catalog
from enface_batch.scan import scan_source
from enface_batch.settings import get_settings


def query(uri: str) -> pl.DataFrame:
    faces = pl.scan_delta(f"{uri}/faces").select("image_sha256", "face_index", "det_score")
    pf = pl.scan_delta(f"{uri}/person_faces").select("person_id", "image_sha256", "face_index")
    return (
        pf.join(faces, on=["image_sha256", "face_index"])
        .group_by("person_id")
        .agg(pl.len().alias("faces"), pl.col("det_score").mean())
        .collect()
    )


def timed_query(uri: str, repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = query(uri).height
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def files(lake: Lake, root: Path) -> tuple[int, int]:
    active = sum(lake.data_files(name) for name in TABLES)
    return active, sum(1 for p in root.rglob("*.parquet") if "_delta_log" not in p.parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--per-run", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    photos = sorted((get_settings().test_data / "lfw_dev" / "images").rglob("*.jpg"))
    need = args.runs * args.per_run
    if len(photos) < need:
        raise SystemExit(f"need {need} photos under lfw_dev/images, found {len(photos)}")
    tmp = Path(tempfile.mkdtemp(prefix="lake-upkeep-"))
    try:
        folder, root = tmp / "photos", tmp / "lake"
        folder.mkdir()
        lake = Lake(root)
        lst = catalog.create_list(lake, "people")["list_id"]
        group = catalog.create_group(lake, "bench", [lst])["group_id"]
        source = catalog.create_source(
            lake,
            "bench",
            group,
            uri=str(folder),
            new_person_threshold="no_match",
            new_person_square_min=50,
            person_list_add=[lst],
            feature_check=[],
        )["source_id"]
        analyzer = Analyzer(load_pack())
        t0 = time.perf_counter()
        for i in range(args.runs):
            for p in photos[i * args.per_run : (i + 1) * args.per_run]:
                shutil.copy(p, folder / p.name)
            scan_source(lake, analyzer, source)
        scan_s = time.perf_counter() - t0
        active, on_disk = files(lake, root)
        q_before, rows = timed_query(lake.uri, args.repeat)
        t0 = time.perf_counter()
        with lake.writer_lock("bench lake_upkeep"):
            upkeep.optimize(lake)
            upkeep.vacuum(lake, retention_hours=0, enforce=False)
        upkeep_s = time.perf_counter() - t0
        active2, on_disk2 = files(lake, root)
        q_after, rows2 = timed_query(lake.uri, args.repeat)
        assert rows == rows2, (rows, rows2)
        print(f"{args.runs} runs x {args.per_run} photo(s): scans took {scan_s:.0f} s; query answers {rows} persons")
        print(
            f"| | data files read (current versions) | parquet files on disk | analyst query, median of {args.repeat} |"
        )
        print("|---|---|---|---|")
        print(f"| before | {active} | {on_disk} | {q_before * 1000:.0f} ms |")
        print(f"| after optimize + vacuum ({upkeep_s:.1f} s) | {active2} | {on_disk2} | {q_after * 1000:.0f} ms |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
