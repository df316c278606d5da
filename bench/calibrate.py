"""Fit the similarity -> Enface % map on lfw_dev folds 1-3 and measure its false-match rates on folds 4-5.

    python bench/calibrate.py [--write]

Anchors: score 80/85/90/95 = the cosine similarity at which a share 1e-2/1e-3/1e-4/1e-5 of different-person
image pairs of the calibration folds still scores that high. The report gives the FMR and the share of
same-person pairs accepted (TMR) at each threshold on the held-out folds 4-5, never on the folds used to fit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from lfw_embed import lfw_embeddings

from enface_batch.evaluation import genuine_similarities, impostor_similarities, verification_folds

TARGETS = {"80": 1e-2, "85": 1e-3, "90": 1e-4, "95": 1e-5}
CAL_FOLDS, TEST_FOLDS = {0, 1, 2}, {3, 4}
CAL_FILE = Path(__file__).resolve().parents[1] / "enface_batch" / "data" / "calibration.json"


def fold_of_images(pairs) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pairs:
        for x in (p.a, p.b):
            out.setdefault(x, p.fold)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write enface_batch/data/calibration.json")
    ap.add_argument("--detector", default="yunet+retinaface")
    args = ap.parse_args()
    pairs, emb, pack = lfw_embeddings(detector=args.detector)
    identity = {k: Path(k).parent.name for k in emb}
    folds = fold_of_images(pairs)
    # Identities of LFW View-2 folds are disjoint; check it, since the held-out claim rests on it.
    ids_by_fold: dict[int, set] = {}
    for k, f in folds.items():
        ids_by_fold.setdefault(f, set()).add(identity[k])
    overlap = sum(len(ids_by_fold[a] & ids_by_fold[b]) for a in ids_by_fold for b in ids_by_fold if a < b)
    split = lambda fs: {k: v for k, v in emb.items() if folds.get(k) in fs}  # noqa: E731
    cal, test = split(CAL_FOLDS), split(TEST_FOLDS)
    imp_cal = impostor_similarities(cal, identity)
    anchors = {s: float(np.quantile(imp_cal, 1 - fmr)) for s, fmr in TARGETS.items()}
    imp_test, gen_test = impostor_similarities(test, identity), genuine_similarities(test, identity)
    # 5-fold LFW accuracy on the official pairs (a missed face counts as similarity -1, i.e. a wrong answer
    # for a same pair).
    sims = np.array(
        [float(emb[p.a] @ emb[p.b]) if emb[p.a] is not None and emb[p.b] is not None else -1.0 for p in pairs]
    )
    same = np.array([p.same for p in pairs])
    fold_ix = np.array([p.fold for p in pairs])
    per_fold = verification_folds(sims, same, fold_ix)
    accs = [a for _, a in per_fold]
    no_face = sum(v is None for v in emb.values())
    print(f"model pack: {pack.version}")
    print(f"lfw_dev images: {len(emb)}, no face found: {no_face}; identity overlap between folds: {overlap}")
    print(
        f"LFW 5-fold accuracy: {np.mean(accs) * 100:.2f}% +- {np.std(accs) * 100:.2f} "
        f"(folds: {', '.join(f'{a * 100:.2f}' for a in accs)}); thresholds {[round(t, 3) for t, _ in per_fold]}"
    )
    print(
        f"calibration folds {sorted(CAL_FOLDS)}: {len(imp_cal):,} impostor pairs; "
        f"held-out folds {sorted(TEST_FOLDS)}: {len(imp_test):,} impostor, {len(gen_test):,} genuine pairs"
    )
    print("| score | cosine | target FMR (fit) | FMR held out | TMR held out |")
    print("|---|---|---|---|---|")
    fmr_out = {}
    for s, t in anchors.items():
        fmr = float((imp_test >= t).mean())
        tmr = float((gen_test >= t).mean())
        fmr_out[s] = {"cosine": round(t, 4), "target_fmr": TARGETS[s], "heldout_fmr": fmr, "heldout_tmr": tmr}
        print(f"| {s} | {t:.3f} | {TARGETS[s]:.0e} | {fmr:.1e} | {tmr * 100:.1f}% |")
    lfw_t = float(np.median([t for t, _ in per_fold]))
    if args.write:
        cals = json.loads(CAL_FILE.read_text()) if CAL_FILE.exists() else {}
        pts = [[-1.0, 0.0], [0.0, 10.0]] + [[anchors[s], float(s)] for s in TARGETS] + [[1.0, 100.0]]
        emb_file = pack.models["embedder"]
        cals[emb_file] = {
            "anchors": pts,
            "no_match": 85.0,
            "fmr": fmr_out,
            "lfw_accuracy": float(np.mean(accs)),
            "lfw_best_cosine": lfw_t,
            "fitted_on": "lfw_dev folds 1-3 (impostor quantiles); reported on folds 4-5",
            "pack": pack.version,
        }
        CAL_FILE.write_text(json.dumps(cals, indent=2) + "\n")
        print(f"wrote {CAL_FILE}")


if __name__ == "__main__":
    main()
