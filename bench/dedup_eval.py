"""How well `enface dedup` merges duplicates: one person per photo enrolled into a list, then dedup.

    python bench/dedup_eval.py                   # att_faces (400 photos, 40 people) and lfw_dev (400 people)
    python bench/dedup_eval.py --lfw-people 200 --lfw-cap 8 --linkages average single complete

Each photo's central face becomes one person of a fresh list in a temporary local lake (in a shuffled order, so
the oldest person of an identity is a random photo of it); `dedup(..., dry_run=True)` then runs the real
operation (lake reads, FAISS k-NN graph, constrained clustering) at each threshold. Reported:

* pairwise precision / recall: over pairs of photos, "put in one person" vs "same identity";
* persons after dedup vs true identities, clusters holding more than one identity (false merges), and
  identities left in more than one person (missed merges).

lfw_dev: the `--lfw-people` identities with the most photos (ties by name), at most `--lfw-cap` photos each;
`--lfw-distractors N` adds N single-photo identities, which can only be false-merged.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path

import numpy as np
from lfw_embed import lfw_embeddings

from enface_batch.analyze import Analyzer
from enface_batch.evaluation import central_face
from enface_batch.lake.store import Lake
from enface_batch.models import load_pack
from enface_batch.ops import catalog
from enface_batch.ops.dedup import dedup
from enface_batch.settings import get_settings

THRESHOLDS = ("80", "85", "90", "95")


def att_embeddings() -> tuple[dict[str, np.ndarray], str]:
    """{path: embedding} of the 400 att_faces photos (cached beside the lfw cache), and the embedder name."""
    root = Path(get_settings().test_data) / "fixtures/att_faces/images"
    paths = sorted(str(p) for p in root.glob("s*/*.pgm"))
    pack = load_pack()
    key = hashlib.sha1(f"{pack.version}|{len(paths)}".encode()).hexdigest()[:12]
    cache = Path(get_settings().model_cache).parent / "bench" / f"att_{key}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        emb = {str(p): e for p, e in zip(z["paths"], z["emb"], strict=True) if not np.isnan(e).all()}
        return emb, pack.models["embedder"]
    t0 = time.time()
    emb = {}
    for res in Analyzer(pack).analyze_uris(paths):
        f = central_face(res)
        emb[res.uri] = f.embedding if f is not None else np.full(pack.embedder.dim, np.nan, np.float32)
    print(f"embedded {len(paths)} att_faces photos in {time.time() - t0:.1f}s", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(list(emb)), emb=np.stack(list(emb.values())))
    return {p: e for p, e in emb.items() if not np.isnan(e).all()}, pack.models["embedder"]


def lfw_subset(people: int, cap: int, distractors: int) -> tuple[dict[str, np.ndarray], str]:
    _, emb, pack = lfw_embeddings()
    by_id: dict[str, list[str]] = defaultdict(list)
    for p, e in sorted(emb.items()):
        if e is not None:
            by_id[Path(p).parent.name].append(p)
    ranked = sorted(by_id, key=lambda n: (-len(by_id[n]), n))
    chosen = ranked[:people]
    singles = [n for n in ranked[people:] if len(by_id[n]) == 1][:distractors]
    out = {p: emb[p] for n in chosen for p in by_id[n][:cap]}
    out.update({by_id[n][0]: emb[by_id[n][0]] for n in singles})
    return out, pack.models["embedder"]


def enrol(lake: Lake, emb: dict[str, np.ndarray], seed: int = 0) -> tuple[str, dict[str, str]]:
    """One person per photo in a new list, created in a shuffled order; returns (list_id, person -> identity)."""
    list_id = catalog.create_list(lake, "dedup-eval")["list_id"]
    paths = list(emb)
    order = np.random.default_rng(seed).permutation(len(paths))
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    rows, truth = [], {}
    for rank, i in enumerate(order.tolist()):
        p = paths[i]
        pid = str(hashlib.md5(p.encode()).hexdigest())
        pid = f"{pid[:8]}-{pid[8:12]}-{pid[12:16]}-{pid[16:20]}-{pid[20:]}"
        truth[pid] = Path(p).parent.name
        t = t0 + timedelta(seconds=rank)
        rows.append(
            {
                "person_id": pid,
                "list_id": list_id,
                "created": t,
                "updated": t,
                "status": "init",
                "fields": [Path(p).parent.name],
                "features": "{}",
                "embedding": np.asarray(emb[p], np.float32).tolist(),
                "image_uri": p,
                "image_sha256": hashlib.sha256(p.encode()).hexdigest(),
                "face_index": 0,
            }
        )
    lake.append("persons", rows)
    return list_id, truth


def scores(out: dict, truth: dict[str, str]) -> dict:
    final = {p: p for p in truth}
    for m in out["merged"]:
        for p in m["merged"]:
            final[p] = m["kept"]
    members: dict[str, list[str]] = defaultdict(list)
    for p, k in final.items():
        members[k].append(p)
    ids = Counter(truth.values())
    true_pairs = sum(n * (n - 1) // 2 for n in ids.values())
    pred_pairs = sum(len(v) * (len(v) - 1) // 2 for v in members.values())
    hit = sum(1 for v in members.values() for a, b in combinations(v, 2) if truth[a] == truth[b])
    spread = defaultdict(set)
    for p, k in final.items():
        spread[truth[p]].add(k)
    return {
        "precision": hit / pred_pairs if pred_pairs else 1.0,
        "recall": hit / true_pairs if true_pairs else 1.0,
        "after": len(members),
        "identities": len(ids),
        "impure": sum(len({truth[p] for p in v}) > 1 for v in members.values()),
        "split": sum(len(v) > 1 for v in spread.values()),
    }


def evaluate(name: str, emb: dict[str, np.ndarray], embedder: str, linkages: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        list_id, truth = enrol(lake, emb)
        print(f"\n## {name}: {len(truth)} persons, {len(set(truth.values()))} identities\n")
        print(
            "| linkage | threshold | pairwise precision | pairwise recall | persons after | identities |"
            " clusters with 2+ identities | identities split | seconds |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for linkage in linkages:
            for thr in THRESHOLDS:
                t = time.perf_counter()
                out = dedup(lake, list_id, threshold=thr, embedder=embedder, dry_run=True, linkage=linkage)
                s = scores(out, truth)
                print(
                    f"| {linkage} | {thr} | {s['precision'] * 100:.2f}% | {s['recall'] * 100:.2f}% | {s['after']} | "
                    f"{s['identities']} | {s['impure']} | {s['split']} | {time.perf_counter() - t:.1f} |",
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw-people", type=int, default=400)
    ap.add_argument("--lfw-cap", type=int, default=10, help="photos per lfw identity, at most")
    ap.add_argument("--lfw-distractors", type=int, default=0, help="single-photo lfw identities to add")
    ap.add_argument("--linkages", nargs="+", default=["average", "single", "complete"])
    ap.add_argument("--skip-att", action="store_true")
    ap.add_argument("--skip-lfw", action="store_true")
    args = ap.parse_args()
    print("# dedup accuracy (bench/dedup_eval.py)")
    if not args.skip_att:
        emb, embedder = att_embeddings()
        evaluate("att_faces", emb, embedder, args.linkages)
    if not args.skip_lfw:
        emb, embedder = lfw_subset(args.lfw_people, args.lfw_cap, args.lfw_distractors)
        label = f"lfw_dev, {args.lfw_people} people with the most photos, at most {args.lfw_cap} each"
        if args.lfw_distractors:
            label += f", + {args.lfw_distractors} single-photo people"
        evaluate(label, emb, embedder, args.linkages)


if __name__ == "__main__":
    main()
