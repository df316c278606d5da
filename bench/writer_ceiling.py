"""The scan writer alone, on one core: how many analysed images per second can one ScanWriter take?

    python bench/writer_ceiling.py [--sizes 1000,100000,1000000] [--images 4000] [--path batched,exact,single]
    python bench/writer_ceiling.py --sizes 100000 --profile        # cProfile of the writer, top functions
    python bench/writer_ceiling.py --sizes 100000 --repeat 3        # best of 3 runs (a shared, loaded box)
    python bench/writer_ceiling.py --sizes 100000 --parts           # + CPU ms per image per part of the writer

Workers analyse; the flow process is the single writer (search, auto-enrolment, staging rows, Delta commits),
so however many workers a cluster adds, a scan cannot go faster than this figure. Everything here runs in one
process pinned to one core, with OpenMP/BLAS/FAISS at one thread.

Input: synthetic analysed chunks (64 images, 1-3 faces each) with the embedding statistics of real SFace
faces (bench/search_scale.py's generator: two faces of one person cosine ~0.68, strangers ~0.09). Each face is
a noisy new sample of either a person already in the list (half of them) or of a newcomer from a pool, so
some faces match list persons, some create persons and later faces (in the same chunk too) match those.
Faces carry what workers send (a thumb, a JPEG crop, landmarks); the source's rules are the default scan's
(no_match, square 50, auto-enrolment into the searched list). The list is pre-filled with N persons (one face
row each) in a fresh lake; the writer's files upsert, faces, persons, person_faces, actions and images
commits are all timed (commit every 256 images, as a scan does).

Paths: "batched" is ScanWriter as the scan runs it (one FAISS search per list per chunk, faces of a chunk
resolved against each other exactly; lists of 100k persons or more take PQ fast-scan candidates re-ranked
exactly); "exact" the same with exact search at any size; "single" the one-face-at-a-time reference
(ActionEngine.process). Before/after: PYTHONPATH=<an older tree's copy> runs this bench against it.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread everywhere, before numpy/BLAS/FAISS load (not when tests import this)
    for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ENFACE_FAISS_THREADS"):
        os.environ[_v] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parents[1]))  # last: PYTHONPATH=an older tree runs it

from bench.search_scale import Faces  # noqa: E402
from enface_batch.analyze import Face, ImageResult  # noqa: E402
from enface_batch.imaging import jpeg_bytes  # noqa: E402
from enface_batch.lake.schemas import TABLES  # noqa: E402
from enface_batch.lake.store import Lake, now  # noqa: E402
from enface_batch.ops import catalog  # noqa: E402
from enface_batch.ops.identity import face_id  # noqa: E402
from enface_batch.scan import CHUNK_IMAGES, ScanWriter  # noqa: E402
from enface_batch.scan_plan import FileEntry, plan  # noqa: E402
from enface_batch.scoring import DEFAULT_EMBEDDER  # noqa: E402

COMMIT_SHARE = 0.1  # enface_batch.scan.COMMIT_SHARE, how the flow spaces commits
DIM = 128
PREFILL_CHUNK = 100_000


def stub_analyzer() -> SimpleNamespace:
    """What the writer needs of an Analyzer: the pack's version, embedder name (calibration) and dim."""
    pack = SimpleNamespace(
        version="bench-sface", models={"embedder": DEFAULT_EMBEDDER}, embedder=SimpleNamespace(dim=DIM)
    )
    return SimpleNamespace(pack=pack)


def _table(name: str, cols: dict) -> pa.Table:
    schema = TABLES[name]
    n = len(next(iter(cols.values())))
    arrays = [pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def prefill(lake: Lake, list_id: str, emb: np.ndarray) -> None:
    """n persons of one face each, as a scan would have left them (without images), in a few big commits."""
    t = now()
    for s in range(0, len(emb), PREFILL_CHUNK):
        e = emb[s : s + PREFILL_CHUNK]
        n = len(e)
        pids = [str(uuid.UUID(int=(0xBE << 96) | (s + i))) for i in range(n)]
        shas = [f"{s + i:064x}" for i in range(n)]
        vec = pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1), pa.float32()), DIM).cast(pa.list_(pa.float32()))
        lake.append(
            "persons",
            _table(
                "persons",
                {
                    "person_id": pids,
                    "list_id": [list_id] * n,
                    "created": [t] * n,
                    "updated": [t] * n,
                    "status": ["init"] * n,
                    "embedding": vec,
                    "image_sha256": shas,
                    "face_index": [0] * n,
                },
            ),
        )
        lake.append(
            "person_faces",
            _table(
                "person_faces",
                {
                    "person_id": pids,
                    "list_id": [list_id] * n,
                    "face_id": [face_id(list_id, h, 0) for h in shas],
                    "embedding": vec,
                    "image_sha256": shas,
                    "face_index": [0] * n,
                    "added": [t] * n,
                    "how": ["created"] * n,
                },
            ),
        )


def smooth_thumb(rng: np.random.Generator) -> np.ndarray:
    """A face-like (smooth) 112x112 crop, so JPEG encoding costs what it costs on real thumbs."""
    y, x = np.mgrid[0:112, 0:112].astype(np.float32)
    base = 128 + 60 * np.sin(x / 17 + rng.random() * 6) * np.cos(y / 23 + rng.random() * 6)
    img = np.stack([base, base * 0.9, base * 0.8], -1) + rng.normal(0, 4, (112, 112, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images(
    faces: Faces, centres: np.ndarray, n_images: int, *, seed: int = 1, match_share: float = 0.5
) -> list[ImageResult]:
    """Analysed images of 1-3 faces: half the faces are list persons, half newcomers from a pool."""
    rng = np.random.default_rng(seed)
    pool = faces.centres(rng, max(8, n_images // 3))
    thumbs = [smooth_thumb(rng) for _ in range(16)]
    jpegs = [jpeg_bytes(t) for t in thumbs]  # workers send the thumb's JPEG too (analyze.py)
    crop = jpeg_bytes(np.repeat(np.repeat(thumbs[0], 2, 0), 2, 1))
    out = []
    for i in range(n_images):
        k = int(rng.integers(1, 4))
        who = []
        for _ in range(k):
            if rng.random() < match_share:
                who.append(("list", int(rng.integers(len(centres)))))
            else:
                who.append(("new", int(rng.integers(len(pool)))))
        who = list(dict.fromkeys(who))  # one person at most once per photo
        cen = np.stack([centres[j] if src == "list" else pool[j] for src, j in who])
        emb = faces.sample(rng, cen.astype(np.float32))
        fl = []
        for j, e in enumerate(emb):
            x0 = 40 + 180 * j
            fl.append(
                Face(
                    index=j,
                    bbox=[x0, 100.0, x0 + 110.0, 240.0],
                    bbox_pro=[[x0, 100.0], [x0 + 110.0, 100.0], [x0 + 110.0, 240.0], [x0, 240.0]],
                    det_score=0.97,
                    landmarks=[
                        [x0 + 35, 150.0],
                        [x0 + 75, 150.0],
                        [x0 + 55, 175.0],
                        [x0 + 39, 200.0],
                        [x0 + 71, 200.0],
                    ],
                    square=110.0,
                    yaw=float(rng.normal(0, 8)),
                    pitch=0.0,
                    roll=0.0,
                    embedding=e.astype(np.float32),
                    thumb=thumbs[(t := int(rng.integers(len(thumbs))))],
                    **({"thumb_jpeg": jpegs[t]} if "thumb_jpeg" in Face.__dataclass_fields__ else {}),
                    crop=crop,
                )
            )
        sha = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        out.append(
            ImageResult(
                uri=f"/archive/{i:07d}.jpg",
                faces=fl,
                width=640,
                height=480,
                size_bytes=150_000,
                format="JPEG",
                sha256=sha,
            )
        )
    return out


def setup(tmp: Path, n: int, faces: Faces) -> tuple[Lake, str, np.ndarray]:
    tmp.mkdir(parents=True, exist_ok=True)
    lake = Lake(str(tmp / "lake"))
    lst = catalog.create_list(lake, "people")["list_id"]
    group = catalog.create_group(lake, "bench", [lst])["group_id"]
    (tmp / "empty").mkdir()
    sid = catalog.create_source(
        lake,
        "bench",
        group,
        uri=str(tmp / "empty"),
        new_person_threshold="no_match",
        new_person_square_min=50,
        person_list_add=[lst],
        feature_check=[],
    )["source_id"]
    emb, centres = faces.persons(n, keep_centres=min(n, 50_000))
    prefill(lake, lst, emb)
    del emb
    return lake, sid, centres


@contextlib.contextmanager
def timed_parts() -> Iterator[dict[str, float]]:
    """CPU seconds spent inside a few of the writer's functions (inclusive), without cProfile's distortion:
    the batched search of a chunk (ChunkSearch.__init__), all of ActionEngine.process_chunk, and commits."""
    from enface_batch.ops import action, search

    spent: dict[str, float] = {"search": 0.0, "process_chunk": 0.0, "commit": 0.0}
    targets = [(action.ActionEngine, "process_chunk", "process_chunk"), (ScanWriter, "commit", "commit")]
    if hasattr(search, "ChunkSearch"):
        targets.append((search.ChunkSearch, "__init__", "search"))
    saved = []
    for owner, name, label in targets:
        fn = owner.__dict__[name]

        def timed(*a, _fn=fn, _label=label, **k):
            t = time.process_time()
            try:
                return _fn(*a, **k)
            finally:
                spent[_label] += time.process_time() - t

        saved.append((owner, name, fn))
        setattr(owner, name, timed)
    try:
        yield spent
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def run_writer(
    lake: Lake,
    sid: str,
    images: list[ImageResult],
    *,
    batched: bool,
    profile: bool,
    exact: bool = False,
    parts: bool = False,
) -> dict:
    p = plan(lake, sid)
    for r in images:  # each image is one file of the source: the writer upserts its files row
        p.aliases[r.sha256] = [FileEntry(r.uri, r.size_bytes, "2026-01-01T00:00:00")]
    # As the flow does (the keyword is absent before this bench's commit: PYTHONPATH=an older tree compares).
    extra = {"commit_share": COMMIT_SHARE} if "commit_share" in ScanWriter.__init__.__code__.co_varnames else {}
    writer = ScanWriter(lake, stub_analyzer(), p, **extra)
    writer.batched = batched
    if exact and hasattr(writer.engine.searcher, "candidates_from"):
        writer.engine.searcher.candidates_from = None  # exact search however large the list
    prof = cProfile.Profile() if profile else None
    # What a writer reads once, on its first chunk, is timed apart (a scan pays it once): the list's index,
    # built from the tables, and the face ids person_faces holds (1M rows at 1M persons).
    t0 = time.perf_counter()
    writer.engine.searcher.index(writer.rules.person_list_search[0])
    writer.engine._known_faces()
    build = time.perf_counter() - t0
    with timed_parts() if parts else contextlib.nullcontext({}) as spent:
        c0, w0 = time.process_time(), time.perf_counter()
        if prof:
            prof.enable()
        for s in range(0, len(images), CHUNK_IMAGES):
            writer.write(images[s : s + CHUNK_IMAGES])
        summary = writer.finish()
    if prof:
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).sort_stats(os.environ.get("PROFILE_SORT", "cumulative"))
        stats.print_stats(int(os.environ.get("PROFILE_TOP", "30")))
        print(buf.getvalue())
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {
        "images": len(images),
        "faces": summary.faces,
        "created": summary.persons_created,
        "matched": summary.faces_matched,
        "cpu": cpu,
        "wall": wall,
        "build": build,
        "fallbacks": getattr(writer.engine.searcher, "fallbacks", 0),
        "parts": dict(spent),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument(
        "--path",
        default="batched,exact,single",
        help="batched (as the scan runs: approximate candidates from 100k persons), exact (batched, exact "
        "search at any size), single (face after face)",
    )
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--parts",
        action="store_true",
        help="also print where the CPU goes, in ms per image: the batched search, the rest of resolving faces "
        "(Python per face), commits, and the rest (staging rows, bookkeeping)",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per row, each on a fresh lake; the row is the run of least CPU"
    )
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the last one)")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[-1]})
    faces = Faces(0)
    print(f"# writer alone, 1 core, {args.images} images per run, load {os.getloadavg()[0]:.2f}\n")
    print(
        "| persons in list | path | images | faces | created | matched | fallbacks | CPU s | wall s "
        "| images/s (CPU) | images/s (wall) | start-up s (index, face ids) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    breakdown: list[str] = []
    for n in [int(float(s)) for s in args.sizes.split(",") if s]:
        for path in args.path.split(","):
            runs = []
            for _ in range(max(1, args.repeat)):
                with tempfile.TemporaryDirectory() as tmp:
                    lake, sid, centres = setup(Path(tmp), n, faces)
                    images = make_images(faces, centres, args.images)
                    runs.append(
                        run_writer(
                            lake,
                            sid,
                            images,
                            batched=path != "single",
                            profile=args.profile,
                            exact=path == "exact",
                            parts=args.parts,
                        )
                    )
            r = min(runs, key=lambda x: x["cpu"])
            print(
                f"| {n:,} | {path} | {r['images']} | {r['faces']} | {r['created']} | {r['matched']} "
                f"| {r['fallbacks']} | {r['cpu']:.2f} | {r['wall']:.2f} | {r['images'] / r['cpu']:,.0f} "
                f"| {r['images'] / r['wall']:,.0f} | {r['build']:.1f} |",
                flush=True,
            )
            if r["parts"]:
                sp, ms = r["parts"], 1000 / r["images"]
                breakdown.append(
                    f"| {n:,} | {path} | {sp['search'] * ms:.3f} | {(sp['process_chunk'] - sp['search']) * ms:.3f} "
                    f"| {sp['commit'] * ms:.3f} | {(r['cpu'] - sp['process_chunk'] - sp['commit']) * ms:.3f} "
                    f"| {r['cpu'] * ms:.3f} |"
                )
    if breakdown:
        print("\nCPU ms per image (inclusive timers, one core):\n")
        print("| persons | path | batched search | resolving faces (Python) | commits | staging, rest | total |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        print("\n".join(breakdown))


if __name__ == "__main__":
    main()
