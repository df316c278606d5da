"""Who is in which photo, measured as a user gets it: BCubed precision, recall and F of persons on lfw_dev.

    python bench/identity_eval.py                         # thresholds 85, 90, 95 (dedup at the same one)
    python bench/identity_eval.py --thresholds 90 --keep /tmp/lake90

For each threshold T, through the CLI only: `enface apply` (one list; one source over lfw_dev/images enrolling
at T into it, square 50, angle 80), `enface run`, `enface dedup --threshold T`. Then each photo's largest face
(face_index 0) is given the person the lake says it is in that list, and the persons are scored against the
folder names with BCubed (Amigo et al. 2009): per photo, precision = share of its cluster with its identity,
recall = share of its identity in its cluster; averaged over photos. A photo whose face has no person counts
as a cluster of its own.

The person of a face is read from the `person_faces` table (the face-to-person data) when the lake has it;
for lakes made before it existed (schema 1), the analyst's reconstruction is used instead: `actions` (the
person created, else the best match when it reached T) followed through the `merges` chains.

Tuning happens on split A (identities whose md5 is even), reporting on split B and on all: `--split`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl

from enface_batch.settings import get_settings

ENFACE = str(Path(sys.executable).with_name("enface"))


def split_of(name: str) -> str:
    return "A" if int(hashlib.md5(name.encode()).hexdigest(), 16) % 2 == 0 else "B"


def bcubed(clusters: dict[str, str], gold: dict[str, str]) -> tuple[float, float, float]:
    """BCubed P, R, F over the items of `gold`; `clusters` maps item -> cluster label."""
    by_c: dict[str, Counter] = defaultdict(Counter)
    by_g: Counter = Counter(gold.values())
    for item, g in gold.items():
        by_c[clusters[item]][g] += 1
    size = {c: sum(cnt.values()) for c, cnt in by_c.items()}
    p = r = 0.0
    for item, g in gold.items():
        c = clusters[item]
        same = by_c[c][g]
        p += same / size[c]
        r += same / by_g[g]
    n = len(gold)
    p, r = p / n, r / n
    return p, r, 2 * p * r / (p + r)


def _cli(*args: str) -> dict:
    out = subprocess.run([ENFACE, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"enface {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    text = out.stdout.strip()
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else {}


def persons_of_faces(lake: str, list_id: str, threshold: float) -> dict[tuple[str, int], str]:
    """(image_sha256, face_index) -> person id in the list, as the lake says."""
    pf = pl.read_delta(f"{lake}/person_faces")
    if "how" in pf.columns:
        pf = pf.filter(pl.col("list_id") == list_id)
        return {(s, i): p for s, i, p in pf.select("image_sha256", "face_index", "person_id").iter_rows()}
    # schema 1: actions, then merges chains
    acts = pl.read_delta(f"{lake}/actions").select("image_sha256", "face_index", "matches", "persons_created")
    out: dict[tuple[str, int], str] = {}
    for sha, idx, matches, created in acts.iter_rows():
        if created:
            out[(sha, idx)] = created[0]
        elif matches and matches[0]["list_id"] == list_id and matches[0]["score"] >= threshold:
            out[(sha, idx)] = matches[0]["person_id"]
    merged: dict[str, str] = {}
    for kept, gone in pl.read_delta(f"{lake}/merges").select("kept_person_id", "merged_person_ids").iter_rows():
        for g in gone or []:
            merged[g] = kept
    for key, pid in out.items():
        seen = set()
        while pid in merged and pid not in seen:
            seen.add(pid)
            pid = merged[pid]
        out[key] = pid
    return out


def evaluate(lake: str, list_id: str, threshold: float, root: Path) -> dict:
    files = pl.read_delta(f"{lake}/files").select("uri", "sha256")
    face_of = persons_of_faces(lake, list_id, threshold)
    persons = pl.read_delta(f"{lake}/persons").filter(pl.col("list_id") == list_id).height
    clusters, gold = {}, {}
    for uri, sha in files.iter_rows():
        name = Path(uri).parent.name
        gold[uri] = name
        clusters[uri] = face_of.get((sha, 0), f"none:{uri}")
    out = {"persons": persons, "people": len(set(gold.values())), "photos": len(gold)}
    for split in ("A", "B", "all"):
        g = {u: n for u, n in gold.items() if split == "all" or split_of(n) == split}
        p, r, f = bcubed({u: clusters[u] for u in g}, g)
        out[split] = {"P": round(p, 4), "R": round(r, 4), "F": round(f, 4)}
    assigned = sum(not c.startswith("none:") for c in clusters.values())
    out["photos_with_person"] = assigned
    return out


CONFIG = """
lists:
  - name: people
groups:
  - name: archive
    person_list_search: [people]
sources:
  - name: lfw
    group: archive
    uri: {uri}
    new_person_threshold: "{threshold}"
    new_person_square_min: 50
    new_person_angle_max: 80
    person_list_add: [people]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thresholds", default="85,90,95")
    ap.add_argument("--root", default=None, help="folder of per-person folders (default: lfw_dev/images)")
    ap.add_argument("--keep", default=None, help="keep the lakes under this folder")
    ap.add_argument("--no-dedup", action="store_true")
    args = ap.parse_args()
    root = Path(args.root) if args.root else Path(get_settings().test_data) / "lfw_dev" / "images"
    base = Path(args.keep or tempfile.mkdtemp(prefix="identity-eval-"))
    base.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    rows = []
    for thr in args.thresholds.split(","):
        lake = str(base / f"lake{thr}")
        cfg = base / f"config{thr}.yaml"
        cfg.write_text(CONFIG.format(uri=root, threshold=thr))
        ids = _cli("apply", str(cfg), "--lake", lake)["ids"]
        list_id = ids["lists"]["people"]
        t0 = time.perf_counter()
        _cli("run", "--lake", lake)
        scan_s = time.perf_counter() - t0
        before = evaluate(lake, list_id, float(thr), root)
        t0 = time.perf_counter()
        if not args.no_dedup:
            _cli("dedup", "--list-id", list_id, "--threshold", thr, "--lake", lake)
        dedup_s = time.perf_counter() - t0
        after = evaluate(lake, list_id, float(thr), root)
        rows.append((thr, before, after, scan_s, dedup_s))
        print(json.dumps({"threshold": thr, "scan": before, "scan+dedup": after}), flush=True)
    print("\n| threshold | stage | persons | people | P (all) | R (all) | F (all) | F (A) | F (B) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for thr, before, after, scan_s, dedup_s in rows:
        for stage, r, s in (("run", before, scan_s), ("run + dedup", after, dedup_s)):
            a = r["all"]
            print(
                f"| {thr} | {stage} | {r['persons']} | {r['people']} | {a['P']:.3f} | {a['R']:.3f} | {a['F']:.3f} "
                f"| {r['A']['F']:.3f} | {r['B']['F']:.3f} | {s:.0f} |"
            )


if __name__ == "__main__":
    main()
