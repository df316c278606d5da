"""How person-list search scales: exact flat vs IVF (enface_batch.index.PersonIndex), 128-d SFace-like data.

    python bench/search_scale.py                 # 1k, 100k, 1M persons + the flat/IVF crossover sweep
    python bench/search_scale.py --quick         # 1k, 10k: seconds
    python bench/search_scale.py --sizes 1000,50000 --extra   # also raw IVF-SQ8 and HNSW32 for comparison

Data: one random unit "identity" centre per person plus noise, with the statistics of real SFace embeddings
(fitted to lfw_dev, see SIGMA below: a shared mean direction, 256 mild "groups", per-face noise so that two faces
of one person have cosine ~0.68 median, 0.53 at p10, and strangers ~0.09 +- 0.09). The index holds one noisy
sample per person. Queries: 90 % other noisy samples of indexed persons ("known"), 10 % strangers (not in the
list). Embeddings are generated in chunks straight into one float32 array, so a 1M list costs 512 MB plus the
index; flat and IVF are built one after the other, never both at once.

Recall "known" counts only queries whose person is in the list (their exact top-1 is that person); a stranger's
exact top-1 is an arbitrary runner-up (cosine ~0.4, below any match threshold), so "all" understates what
matters for matching.

Figures, never assertions: build time, resident memory the index added (RSS delta, includes the id maps) and
the raw index bytes, queries/s for a batch of 1000 queries at k=1 and k=10, single-query latency
(median/p95), recall@1 and recall@10 of the approximate index against exact flat search (all queries and
known persons only), and the size from which IVF answers single queries faster than flat.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
import uuid

import faiss
import numpy as np

from enface_batch.index import PersonIndex, ivf_nlist

DIM = 128
# Fitted to real SFace embeddings of lfw_dev (3,811 faces, 2,086 people; bench/lfw_embed.py cache):
#   real:      same-person cosine p10/p50 0.53/0.68, different-person mean 0.09, std 0.088, p99.9 0.36,
#              |mean embedding| 0.30, PCA participation ratio 112 of 128 (nearly isotropic)
#   synthetic: same-person p10/p50 0.53/0.69, different-person mean 0.09, std 0.087, |mean| 0.29, PR 122
SIGMA, SIGMA_SPREAD = 0.66, 0.35  # per-sample noise norm ~ SIGMA * exp(SIGMA_SPREAD * N(0,1)), centre norm 1
MEAN_SHARE = 0.36  # weight of one shared direction in every identity centre (the real embeddings' mean offset)
GROUPS = 256
GROUP_SHARE = 0.1  # squared weight of a group direction (mild demographic-like structure)
CHUNK = 65_536
EXTRA_KINDS = ("flat", "sq8", "pq", "ivfpq", "hnsw")  # the raw FAISS indexes --extra builds
CLEARLY_FASTER = 1.2  # "IVF is faster" means at least this ratio of single-query latencies


# ---------------------------------------------------------------------------------------------- data
def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Faces:
    """Deterministic synthetic person list; identities of row i are reproducible from (seed, chunk)."""

    def __init__(self, seed: int = 0, dim: int = DIM):
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng((seed, 0xC0FFEE))
        self.groups = _unit(rng.standard_normal((GROUPS, dim), dtype=np.float32))
        self.mean = _unit(rng.standard_normal((1, dim), dtype=np.float32))

    def centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        g = self.groups[rng.integers(GROUPS, size=n)]
        r = _unit(rng.standard_normal((n, self.dim), dtype=np.float32))
        c = _unit(math.sqrt(GROUP_SHARE) * g + math.sqrt(1 - GROUP_SHARE) * r)
        return _unit(MEAN_SHARE * self.mean + math.sqrt(1 - MEAN_SHARE**2) * c)

    def sample(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        n = len(centres)
        sigma = SIGMA * np.exp(SIGMA_SPREAD * rng.standard_normal((n, 1), dtype=np.float32))
        noise = rng.standard_normal(centres.shape, dtype=np.float32) * (sigma / math.sqrt(self.dim))
        return _unit(centres + noise)

    def persons(self, n: int, keep_centres: int) -> tuple[np.ndarray, np.ndarray]:
        """(n x dim) stored embeddings, centres of the first ``keep_centres`` persons."""
        out = np.empty((n, self.dim), dtype=np.float32)
        kept = np.empty((0, self.dim), dtype=np.float32)
        for c, s in enumerate(range(0, n, CHUNK)):
            rng = np.random.default_rng((self.seed, 1, c))
            cen = self.centres(rng, min(CHUNK, n - s))
            out[s : s + len(cen)] = self.sample(rng, cen)
            if len(kept) < keep_centres:
                kept = np.concatenate([kept, cen[: keep_centres - len(kept)]])
        return out, kept

    def queries(self, known_centres: np.ndarray, n_known: int, n_strangers: int) -> tuple[np.ndarray, np.ndarray]:
        """Queries (known persons first, then strangers) and the true person row of each (-1: stranger)."""
        rng = np.random.default_rng((self.seed, 2))
        rows = rng.choice(len(known_centres), size=n_known, replace=len(known_centres) < n_known)
        known = self.sample(rng, known_centres[rows])
        strangers = self.sample(rng, self.centres(rng, n_strangers))
        return np.concatenate([known, strangers]), np.concatenate([rows, np.full(n_strangers, -1)])


def person_ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=(0x5EED << 96) | i)) for i in range(n)]


# ---------------------------------------------------------------------------------------------- measuring
def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def index_bytes(ix: PersonIndex) -> int:
    """Bytes of vectors + ids + centroids held by FAISS (analytical: serializing 1M would copy 512 MB)."""
    n = len(ix)
    if ix.kind == "flat":
        return n * (ix.dim * 4 + 8)
    inner = faiss.extract_index_ivf(ix._index)
    return n * (inner.code_size + 8) + inner.nlist * ix.dim * 4


def timed(fn, *a, **kw):
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t


def single_latency(ix: PersonIndex, q: np.ndarray, budget_s: float = 2.0, k: int = 10) -> tuple[float, float]:
    """Median and p95 seconds of one-query searches (as the pipeline issues them), within a time budget."""
    ix.search(q[:1], k)  # warm-up
    times = []
    t_end = time.perf_counter() + budget_s
    for i in range(len(q)):
        t = time.perf_counter()
        ix.search(q[i : i + 1], k)
        times.append(time.perf_counter() - t)
        if i >= 20 and time.perf_counter() > t_end:
            break
    return float(np.median(times)), float(np.percentile(times, 95))


def batch_qps(ix: PersonIndex, q: np.ndarray, k: int) -> float:
    _, dt = timed(ix.search, q, k)
    return len(q) / dt


def recall(approx: list, exact: list, k: int, rows: slice | None = None) -> float:
    pairs = list(zip(approx, exact, strict=True))[rows or slice(None)]
    if k == 1:
        return float(np.mean([bool(a) and bool(e) and a[0][0] == e[0][0] for a, e in pairs]))
    return float(np.mean([len({p for p, _ in a[:k]} & {p for p, _ in e[:k]}) / max(1, len(e[:k])) for a, e in pairs]))


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.3f}" if s < 0.01 else f"{s * 1e3:.1f}"


def fmt_mb(b: float) -> str:
    return f"{b / 2**20:.1f}"


# ---------------------------------------------------------------------------------------------- runs
def run_size(
    n: int,
    faces: Faces,
    n_queries: int,
    nprobe_fracs: list[float],
    extra: bool,
    hnsw_max: int,
    kinds=("flat", "ivf"),
    extra_kinds=EXTRA_KINDS,
) -> dict:
    n_known = int(n_queries * 0.9)
    emb, centres = faces.persons(n, keep_centres=min(n, 20_000))
    q, truth = faces.queries(centres, n_known, n_queries - n_known)
    ids = person_ids(n)
    res: dict = {"n": n}
    known = slice(0, n_known)

    for kind in kinds:
        gc.collect()
        r0 = rss()
        ix, t_build = timed(PersonIndex.build, ids, emb, version=1, kind=kind)
        r = {"build_s": t_build, "rss": rss() - r0, "bytes": index_bytes(ix)}
        r["qps1"] = batch_qps(ix, q, 1)
        r["qps10"] = batch_qps(ix, q, 10)
        r["lat50"], r["lat95"] = single_latency(ix, q)
        top = ix.search(q, 10)
        if kind == "flat":
            exact = top
            hit = [bool(t) and t[0][0] == ids[row] for t, row in zip(top[:n_known], truth[:n_known], strict=True)]
            res["ident"] = float(np.mean(hit))  # exact top-1 is the true person (data sanity)
            res["same_sim"] = float(np.median([t[0][1] for t in top[:n_known]]))
            res["stranger_sim"] = float(np.median([t[0][1] for t in top[n_known:]])) if n_queries > n_known else 0
        else:
            r["nlist"] = faiss.extract_index_ivf(ix._index).nlist
            r["nprobe"] = ix.nprobe
            r["r1"], r["r10"] = recall(top, exact, 1), recall(top, exact, 10)
            r["r1_known"], r["r10_known"] = recall(top, exact, 1, known), recall(top, exact, 10, known)
            sweep = []
            default = ix.nprobe
            for p in sorted({max(1, round(f * r["nlist"])) for f in nprobe_fracs} | {default}):
                ix.nprobe = p
                t, dt = timed(ix.search, q, 10)
                lat, _ = single_latency(ix, q, budget_s=1.0)
                r1, r1k, r10 = recall(t, exact, 1), recall(t, exact, 1, known), recall(t, exact, 10)
                sweep.append((p, r1, r1k, r10, len(q) / dt, lat))
            ix.nprobe = default
            r["sweep"] = sweep
        res[kind] = r
        del ix, top
        gc.collect()

    if extra:
        res["extra"] = run_extra(emb, q, exact, ids, n_known, hnsw_max, kinds=extra_kinds)
    return res


DELETES = {
    "Flat": "in place: row zeroed (tombstone), compacted past 256 (PersonIndex)",
    "IVF": "remove_ids scans every list, O(n); or tombstones + rebuild",
    "SQ8": "as IVF",
    "PQ": "remove_ids O(n); or tombstones + rebuild",
    "HNSW": "no remove_ids: tombstones (filtered at search) + periodic rebuild",
}


def run_extra(
    emb, q, exact, ids, n_known, hnsw_max, *, efs=(64, 128, 256, 512), nprobes=(0.05, 0.1, 0.25), kinds=EXTRA_KINDS
) -> list:
    """Raw FAISS alternatives, for comparison (PersonIndex builds flat or IVF): IVF-SQ8, exhaustive PQ fast
    scan and IVF-PQ fast scan both re-ranked exactly (IndexRefineFlat), HNSW32 with efSearch swept."""
    n, d = emb.shape
    nlist = ivf_nlist(n)
    rows = []
    sample = emb[np.random.default_rng(0).choice(n, min(n, max(nlist * 64, 20_000)), replace=False)]

    def evaluate(name, index, t_build, bytes_per, deletes):
        before = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 1  # what PersonIndex does for batches (index._blas_for)
        _, dt = timed(index.search, q, 10)
        _, idx = index.search(q, 10)
        faiss.cvar.distance_compute_blas_threshold = before
        approx = [[(ids[j], 0.0) for j in row if j >= 0] for row in idx]
        index.search(q[:1], 10)
        lat = []
        t_end = time.perf_counter() + 2.0
        for i in range(min(200, len(q))):
            t = time.perf_counter()
            index.search(q[i : i + 1], 10)
            lat.append(time.perf_counter() - t)
            if i >= 10 and time.perf_counter() > t_end:
                break
        r = (
            name,
            n,
            t_build,
            bytes_per,
            len(q) / dt,
            float(np.median(lat)),
            recall(approx, exact, 1),
            recall(approx, exact, 1, slice(0, n_known)),
            recall(approx, exact, 10),
            deletes,
        )
        print("  " + " | ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in r), flush=True)
        rows.append(r)

    if "flat" in kinds:
        ix = faiss.IndexFlatIP(d)
        _, t_build = timed(ix.add, emb)
        evaluate("Flat (exact, BLAS batches)", ix, t_build, d * 4, DELETES["Flat"])
        del ix

    if n >= 39 * 4 and "sq8" in kinds:
        ix = faiss.index_factory(d, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        ix.train(sample)
        ix.add(emb)
        t_build = time.perf_counter() - t
        for frac in (0.25, 0.6):
            faiss.extract_index_ivf(ix).nprobe = max(1, round(frac * nlist))
            evaluate(f"IVF{nlist},SQ8 np{round(frac * nlist)}", ix, t_build, d + 8, DELETES["SQ8"])
        del ix
    if n >= 39 * 4 and "pq" in kinds:
        for spec, bpv in (("PQ64x4fs,RFlat", 32 + 4 * d), ("PQ32x4fs,RFlat", 16 + 4 * d)):
            ix = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
            t = time.perf_counter()
            ix.train(sample[:100_000])  # 16 centroids per sub-quantizer need no more
            ix.add(emb)
            t_build = time.perf_counter() - t
            for kf in (4, 8, 16):
                ix.k_factor = kf
                evaluate(f"{spec} k_factor {kf}", ix, t_build, bpv, DELETES["PQ"])
            del ix
    if n >= 39 * 4 and "ivfpq" in kinds:
        spec = f"IVF{nlist},PQ64x4fs,RFlat"
        ix = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        ix.train(sample)
        ix.add(emb)
        t_build = time.perf_counter() - t
        ix.k_factor = 8
        for frac in nprobes:
            p = max(1, round(frac * nlist))
            faiss.extract_index_ivf(ix).nprobe = p
            evaluate(f"{spec} np{p} k_factor 8", ix, t_build, 32 + 8 + 4 * d, DELETES["PQ"])
        del ix
    if n <= hnsw_max and "hnsw" in kinds:
        ix = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 200
        _, t_build = timed(ix.add, emb)
        for ef in efs:
            ix.hnsw.efSearch = ef
            evaluate(f"HNSW32 efC200 ef{ef}", ix, t_build, d * 4 + 32 * 2 * 4, DELETES["HNSW"])
        del ix
    return rows


def crossover_sweep(faces: Faces, sizes: list[int]) -> list[tuple[int, float, float, float]]:
    """Single-query median latency of flat vs IVF (PersonIndex defaults) and IVF recall@1, at small sizes."""
    out = []
    for n in sizes:
        emb, centres = faces.persons(n, keep_centres=min(n, 5_000))
        q, _ = faces.queries(centres, 450, 50)
        ids = person_ids(n)
        flat = PersonIndex.build(ids, emb, version=1, kind="flat")
        ivf = PersonIndex.build(ids, emb, version=1, kind="ivf")
        lf, _ = single_latency(flat, q, budget_s=1.0)
        li, _ = single_latency(ivf, q, budget_s=1.0)
        r1 = recall(ivf.search(q, 1), flat.search(q, 1), 1)
        out.append((n, lf, li, r1))
        del flat, ivf, emb
    return out


def crossover_size(points: list[tuple[int, float, float]], margin: float = CLEARLY_FASTER) -> float | None:
    """Smallest n (log-interpolated) from which IVF answers single queries ``margin`` times faster than flat.

    A margin, because below ~5k persons both take ~0.04-0.07 ms and the sign of the difference is timing noise.
    """
    pts = sorted(points)
    lm = math.log(margin)
    for (n0, f0, i0), (n1, f1, i1) in zip(pts, pts[1:], strict=False):
        d0, d1 = math.log(f0 / i0) - lm, math.log(f1 / i1) - lm
        if d0 <= 0 < d1:
            t = -d0 / (d1 - d0)
            return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    if pts and pts[0][1] > margin * pts[0][2]:
        return float(pts[0][0])
    return None


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,1000000", help="comma-separated list sizes (persons)")
    ap.add_argument("--quick", action="store_true", help="sizes 1k,10k and a short crossover sweep")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nprobe", default="0.1,0.25,0.4,0.5,0.75", help="IVF nprobe/nlist fractions to sweep")
    ap.add_argument(
        "--sweep", default="1000,2000,5000,10000,20000,50000,200000", help="crossover sweep sizes ('' = off)"
    )
    ap.add_argument("--extra", action="store_true", help="also raw IVF-SQ8, PQ/IVF-PQ + re-rank, HNSW32 (efC 200)")
    ap.add_argument("--extra-only", action="store_true", help="only the raw FAISS table (skip PersonIndex flat/IVF)")
    ap.add_argument("--extra-kinds", default=",".join(EXTRA_KINDS), help="raw FAISS kinds to build")
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest size to build HNSW for with --extra")
    ap.add_argument("--threads", type=int, default=0, help="FAISS threads (0 = all cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        os.environ["ENFACE_FAISS_THREADS"] = str(args.threads)
    sizes = [1000, 10000] if args.quick else [int(float(s)) for s in args.sizes.split(",") if s]
    sweep = [1000, 3000, 10000] if args.quick else [int(float(s)) for s in args.sweep.split(",") if s]
    nprobe_fracs = [float(p) for p in args.nprobe.split(",") if p]
    faces = Faces(args.seed)
    threads = args.threads or faiss.omp_get_max_threads()
    print(
        f"# faiss {faiss.__version__}, numpy {np.__version__}, {os.cpu_count()} cpus, {threads} FAISS threads, "
        f"dim {DIM}, {args.queries} queries (90 % known persons, 10 % strangers), load {os.getloadavg()[0]:.2f}"
    )

    results = []
    for n in sizes:
        t0 = time.perf_counter()
        kinds = ("flat",) if args.extra_only else ("flat", "ivf")
        extra_kinds = tuple(args.extra_kinds.split(","))
        r = run_size(
            n, faces, args.queries, nprobe_fracs, args.extra or args.extra_only, args.hnsw_max, kinds, extra_kinds
        )
        results.append(r)
        print(
            f"# n={n:,}: exact top-1 is the true person for {r['ident']:.3f} of known queries; median top-1 cosine "
            f"known {r['same_sim']:.3f}, strangers {r['stranger_sim']:.3f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    print("\n## Flat (exact) vs IVF (PersonIndex defaults); qps = batch of 1000 queries, latency = one query, k=10")
    hdr = (
        "| persons | index | build s | RSS MB | index MB | qps k=1 | qps k=10 | 1-query ms p50 / p95 "
        "| R@1 all / known | R@10 all / known |"
    )
    print(hdr)
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for kind in ("flat", "ivf") if "ivf" in r else ("flat",):
            x = r[kind]
            name = "Flat" if kind == "flat" else f"IVF{x['nlist']} np{x['nprobe']}"
            rec1 = "1 / 1" if kind == "flat" else f"{x['r1']:.3f} / {x['r1_known']:.3f}"
            rec10 = "1 / 1" if kind == "flat" else f"{x['r10']:.3f} / {x['r10_known']:.3f}"
            print(
                f"| {r['n']:,} | {name} | {x['build_s']:.2f} | {fmt_mb(x['rss'])} | {fmt_mb(x['bytes'])} "
                f"| {x['qps1']:,.0f} | {x['qps10']:,.0f} | {fmt_ms(x['lat50'])} / {fmt_ms(x['lat95'])} "
                f"| {rec1} | {rec10} |"
            )

    print("\n## IVF nprobe sweep (k=10; qps = batch of 1000; * = PersonIndex default)")
    print("| persons | nlist | nprobe | R@1 all | R@1 known | R@10 all | qps | 1-query ms | flat 1-query ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for p, r1, r1k, r10, qps, lat in r["ivf"]["sweep"] if "ivf" in r else []:
            star = "*" if p == r["ivf"]["nprobe"] else ""
            print(
                f"| {r['n']:,} | {r['ivf']['nlist']} | {p}{star} | {r1:.3f} | {r1k:.3f} | {r10:.3f} | {qps:,.0f} "
                f"| {fmt_ms(lat)} | {fmt_ms(r['flat']['lat50'])} |"
            )

    if args.extra or args.extra_only:
        print("\n## Raw FAISS alternatives (not used by PersonIndex), k=10")
        print(
            "| index | persons | build s | B/vector | MB | qps batch | 1-query ms | R@1 all | R@1 known | R@10 "
            "| deletes |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in results:
            for name, n, tb, bpv, qps, lat, r1, r1k, r10, dele in r.get("extra", []):
                print(
                    f"| {name} | {n:,} | {tb:.1f} | {bpv} | {bpv * n / 2**20:,.0f} | {qps:,.0f} | {fmt_ms(lat)} "
                    f"| {r1:.3f} | {r1k:.3f} | {r10:.3f} | {dele} |"
                )

    points = [(r["n"], r["flat"]["lat50"], r["ivf"]["lat50"]) for r in results if "ivf" in r]
    if sweep:
        print("\n## Crossover sweep: single-query median latency, k=10")
        print("| persons | flat ms | IVF ms | IVF R@1 vs exact |")
        print("|---:|---:|---:|---:|")
        for n, lf, li, r1 in crossover_sweep(faces, sweep):
            points.append((n, lf, li))
            print(f"| {n:,} | {fmt_ms(lf)} | {fmt_ms(li)} | {r1:.3f} |")
    print(f"\npeak RSS of this run: {fmt_mb(peak_rss())} MB")
    c = crossover_size(points)
    if c is None:
        print(f"\nIVF never answered single queries >= {CLEARLY_FASTER}x faster than flat at these sizes.")
    else:
        print(
            f"\nIVF answers single queries >= {CLEARLY_FASTER}x faster than flat from ~{c:,.0f} persons "
            "(log-interpolated between measured sizes)."
        )


if __name__ == "__main__":
    main()
