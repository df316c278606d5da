"""Every accuracy figure of the analysis core, from ../shared/data, in one report with pictures.

    python bench/accuracy.py                      # full sets (about 2.5 minutes on 2 cores; 1 with cached lfw_dev)
    python bench/accuracy.py --quick --out DIR    # small subsets, for CI's smoke check (under a minute)

Writes DIR/README.md (Markdown tables), DIR/figures.json (every number) and four PNGs: verification DET/ROC on
lfw_dev with the 80/85/90/95 score thresholds marked, the race confusion matrix and age error by age bin on
FairFace val, and detection precision-recall on CMU+MIT. The full run writes to reports/accuracy/ (committed;
the README links it); --quick writes to a temporary folder unless --out is given.

LFW: 5-fold protocol on lfw_dev (threshold chosen on 4 folds, accuracy on the 5th); the DET curve uses every
same-person and every different-person image pair of lfw_dev. Gender, age and race: FairFace val, never used to
fit or tune anything (the heads are fitted on fairface/train, see enface_batch/train/attributes.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from enface_batch.analyze import Analyzer
from enface_batch.evaluation import (
    attribute_predictions,
    attribute_summary,
    central_face,
    detection_pr,
    genuine_similarities,
    impostor_similarities,
    lfw_pairs,
    pr_at,
    verification_folds,
)
from enface_batch.models import load_pack
from enface_batch.models.attributes import AGE_BINS, RACES
from enface_batch.scoring import calibration_for
from enface_batch.settings import get_settings

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports" / "accuracy"
QUICK = {"fairface": 100, "lfw_pairs_per_fold": 30, "mitcmu_images": 10}
# The aims of the attribute network's issue (race counted with "unknown" as wrong; no class under 55 %).
FLOORS = {
    "race_top1": 0.72,
    "race_accuracy": 0.72,
    "race_min_recall": 0.55,
    "gender_accuracy": 0.94,
    "age_bin_or_adjacent": 0.93,
}
FLOORS_LFW = 0.993


# --- measurements ------------------------------------------------------------------------------------------------


def lfw_quick(analyzer: Analyzer, per_fold: int):
    """A subset of lfw_dev: the first `per_fold` same and `per_fold` different pairs of each fold."""
    root = Path(get_settings().test_data) / "lfw_dev"
    pairs = lfw_pairs(root)
    keep = []
    for k in sorted({p.fold for p in pairs}):
        same = [p for p in pairs if p.fold == k and p.same][:per_fold]
        diff = [p for p in pairs if p.fold == k and not p.same][:per_fold]
        keep += same + diff
    paths = sorted({p.a for p in keep} | {p.b for p in keep})
    emb = {}
    for res in analyzer.analyze_uris(paths):
        f = central_face(res)
        emb[res.uri] = f.embedding if f is not None else None
    return keep, emb


def verification(pairs, emb) -> dict:
    sims = np.array(
        [float(emb[p.a] @ emb[p.b]) if emb.get(p.a) is not None and emb.get(p.b) is not None else -1.0 for p in pairs]
    )
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    accs = [a for _, a in verification_folds(sims, same, folds)]
    identity = {k: Path(k).parent.name for k in emb}
    imp = impostor_similarities(emb, identity)
    gen = genuine_similarities(emb, identity)
    return {
        "pairs": len(pairs),
        "images": len(emb),
        "no_face": sum(v is None for v in emb.values()),
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "impostor_pairs": len(imp),
        "genuine_pairs": len(gen),
        "_imp": imp,
        "_gen": gen,
    }


# --- plots -------------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "figure.dpi": 100})
    return plt


def plot_verification(ver: dict, cal, path: Path) -> None:
    plt = _plt()
    imp, gen = np.sort(ver["_imp"]), np.sort(ver["_gen"])
    # thresholds dense along both axes: genuine-score quantiles and impostor quantiles down to the rarest FMR
    rare = np.logspace(np.log10(1 / len(imp)), 0, 300)
    t = np.unique(np.concatenate([np.quantile(gen, np.linspace(0, 1, 300)), np.quantile(imp, 1 - rare), imp[-3:]]))
    fmr = 1 - np.searchsorted(imp, t, side="left") / len(imp)
    fnmr = np.searchsorted(gen, t, side="left") / len(gen)
    floor = 0.5 / len(imp)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4))
    ax1.plot(np.maximum(fmr, floor), np.maximum(fnmr, 0.5 / len(gen)), color="C0")
    ax1.set(xscale="log", yscale="log", xlabel="false match rate (different people accepted)")
    ax1.set(ylabel="false non-match rate (same person rejected)", title="DET, lfw_dev (all image pairs)")
    ax2.plot(np.maximum(fmr, floor), 1 - fnmr, color="C0")
    ax2.set(xscale="log", xlabel="false match rate", ylabel="true match rate", title="ROC, lfw_dev")
    for i, s in enumerate(("80", "85", "90", "95")):
        c = cal.similarity_for(float(s))
        fm = max(float((imp >= c).mean()), floor)
        fn = max(float((gen < c).mean()), 0.5 / len(gen))
        ax1.plot(fm, fn, "o", color=f"C{i + 1}", label=f"score {s} (cos {c:.3f})")
        ax2.plot(fm, 1 - fn, "o", color=f"C{i + 1}")
    ax1.legend(loc="upper right", fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(att: dict, path: Path) -> None:
    plt = _plt()
    conf = np.asarray(att["race_confusion"], float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    short = ["White", "Black", "Latino", "E Asian", "SE Asian", "Indian", "Mid East"]
    ax.set_xticks(range(7), short, rotation=35, ha="right")
    ax.set_yticks(range(7), [f"{s} ({int(n)})" for s, n in zip(short, conf.sum(1), strict=True)])
    for i in range(7):
        for j in range(7):
            colour = "white" if norm[i, j] > 0.5 else "k"
            ax.text(j, i, f"{norm[i, j] * 100:.0f}", ha="center", va="center", color=colour)
    ax.set(xlabel="predicted (top-1)", ylabel="FairFace label (faces)")
    ax.set_title(f"Race, FairFace val: top-1 {att['race_top1'] * 100:.1f}%, row %")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_age(att: dict, path: Path) -> None:
    plt = _plt()
    by = att["age_by_bin"]
    ex = np.array([by[b]["exact"] for b in AGE_BINS])
    adj = np.array([by[b]["adjacent"] for b in AGE_BINS])
    yrs = np.array([by[b]["years_outside"] for b in AGE_BINS])
    n = [by[b]["faces"] for b in AGE_BINS]
    fig, ax = plt.subplots(figsize=(6.4, 3.7))
    x = np.arange(len(AGE_BINS))
    ax.bar(x, ex * 100, color="C2", label="right bin")
    ax.bar(x, adj * 100, bottom=ex * 100, color="C1", label="adjacent bin")
    ax.bar(x, (1 - ex - adj) * 100, bottom=(ex + adj) * 100, color="C3", label="2+ bins off")
    ax.set_xticks(x, [f"{b}\n({k})" for b, k in zip(AGE_BINS, n, strict=True)], fontsize=7)
    ax.set(ylabel="% of faces", xlabel="FairFace age bin (faces)", ylim=(0, 100))
    ax2 = ax.twinx()
    ax2.plot(x, yrs, "k.-", label="mean years outside the bin")
    ax2.set(ylabel="years outside the true bin", ylim=(0, max(5.0, float(np.nanmax(yrs)) * 1.2)))
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="lower center", ncol=4, fontsize=7, frameon=False)
    ax.set_title("Age error by age bin, FairFace val")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def plot_pr(pr: dict, threshold: float, path: Path) -> None:
    plt = _plt()
    order = np.argsort(-pr["scores"])
    tp = np.cumsum(pr["hits"][order])
    prec = tp / np.arange(1, len(tp) + 1)
    rec = tp / max(pr["gt_faces"], 1)
    p, r = pr_at(pr, threshold)
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    ax.plot(rec, prec, color="C0")
    ax.plot(r, p, "o", color="C3", label=f"operating threshold {threshold:g}: P {p:.2f}, R {r:.2f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"Detection, CMU+MIT ({pr['images']} labelled images, {pr['gt_faces']} faces)")
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- report ------------------------------------------------------------------------------------------------------


def _pct(v: float) -> str:
    return f"{v * 100:.1f}%"


def _floor(v: float, floor: float, digits: int = 1) -> str:
    return f"{v * 100:.{digits}f}% ({'meets' if v >= floor else 'below'} {_pct(floor)})"


def write_markdown(fig: dict, out: Path) -> str:
    a, v, d = fig["attributes"], fig["verification"], fig["detection"]
    lines = [
        "# Accuracy report",
        "",
        f"Model pack: `{fig['pack']}`. Command: `{fig['command']}` ({fig['seconds']:.0f} s"
        f"{', quick subsets' if fig['quick'] else ''}). Data: ../shared/data.",
        "",
        "| figure | set | value (floor) |",
        "|---|---|---|",
        f"| race top-1 (7 classes) | FairFace val, {a['faces_found']} faces | {_floor(a['race_top1'], 0.72)} |",
        f"| race, 'unknown' counted as wrong | FairFace val | {_floor(a['race_accuracy'], 0.72)} |",
        f"| race, lowest class recall | FairFace val | {_floor(a['race_min_recall'], 0.55)} |",
        f"| race answered (not 'unknown') / accuracy when answered | FairFace val | "
        f"{_pct(1 - a['race_unknown_share'])} / {_pct(a['race_accuracy_when_answered'])} |",
        f"| gender | FairFace val | {_floor(a['gender_accuracy'], 0.94)} |",
        f"| age, right bin or adjacent | FairFace val | {_floor(a['age_bin_or_adjacent'], 0.93)} |",
        f"| age, right bin | FairFace val | {_pct(a['age_bin_accuracy'])} |",
        f"| age, mean years outside the right bin | FairFace val | {a['age_years_outside_bin']:.1f} |",
        f"| verification accuracy (5-fold) | lfw_dev, {v['pairs']} pairs | {_floor(v['accuracy'], FLOORS_LFW, 2)} "
        f"± {v['accuracy_std'] * 100:.2f} |",
        f"| detection recall at threshold {d['threshold']:g} | CMU+MIT, {d['gt_faces']} faces | {_pct(d['recall'])} |",
        f"| detection precision at threshold {d['threshold']:g} | CMU+MIT labelled images | {_pct(d['precision'])} |",
        f"| faces found | FairFace val | {a['faces_found']} of {a['images']} |",
        "",
        "## Race: recall per class (FairFace val)",
        "",
        "| " + " | ".join(RACES) + " |",
        "|" + "---|" * len(RACES),
        "| " + " | ".join(_pct(a["race_recall"][c]) for c in RACES) + " |",
        "",
        "## Age by bin (FairFace val)",
        "",
        "| bin | faces | right bin | adjacent | years outside |",
        "|---|---|---|---|---|",
    ]
    for b in AGE_BINS:
        r = a["age_by_bin"][b]
        if r["faces"]:
            lines.append(
                f"| {b} | {r['faces']} | {_pct(r['exact'])} | {_pct(r['adjacent'])} | {r['years_outside']:.1f} |"
            )
    lines += _breakdown_lines(a)
    lines += [
        "",
        "## Score thresholds on lfw_dev (all image pairs)",
        "",
        "| score | cosine | FMR | TMR |",
        "|---|---|---|---|",
    ]
    for s, t in v["thresholds"].items():
        lines.append(f"| {s} | {t['cosine']:.3f} | {t['fmr']:.1e} | {_pct(t['tmr'])} |")
    lines += [
        "",
        f"{v['impostor_pairs']:,} different-person and {v['genuine_pairs']:,} same-person pairs; these thresholds were "
        "fitted on folds 1-3 of the same set (bench/calibrate.py reports folds 4-5 held out).",
        "",
        "![verification](verification_det.png)",
        "![race confusion](race_confusion.png)",
        "![age by bin](age_error_by_bin.png)",
        "![detection precision-recall](detection_pr.png)",
        "",
        "Detection per setting (ENFACE_DET_MODE fast / thorough) on CMU+MIT and crowd photos, with ms per image: "
        "[detection_modes.md](detection_modes.md) (`python bench/detection_eval.py --write`).",
        "",
    ]
    text = "\n".join(lines)
    (out / "README.md").write_text(text)
    return text


def _matrix(conf: list[list[int]], labels: list[str], title: str) -> list[str]:
    lines = [
        "",
        f"## {title}",
        "",
        "| label \\ predicted | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name, row in zip(labels, conf, strict=True):
        lines.append(f"| {name} ({sum(row)}) | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _breakdown_lines(a: dict) -> list[str]:
    """Per age group (children are the hard case), per race class, and the confusion matrices."""
    lines = [
        "",
        "## By age group (FairFace val)",
        "",
        "FairFace val's 20+ rows stand in for the UTKFace-style adults check (no UTKFace in ../shared/data).",
        "",
        "| age group | faces | gender | race ('unknown' wrong) | age right bin | age right or adjacent |",
        "|---|---|---|---|---|---|",
    ]
    for g, r in a.get("by_age_group", {}).items():
        if r["faces"]:
            lines.append(
                f"| {g} | {r['faces']} | {_pct(r.get('gender', float('nan')))} | {_pct(r.get('race', float('nan')))} "
                f"| {_pct(r.get('age_bin', float('nan')))} | {_pct(r.get('age_bin_or_adjacent', float('nan')))} |"
            )
    if a.get("gender_by_race"):
        lines += ["", "## Gender accuracy per race class (FairFace val)", ""]
        lines += ["| " + " | ".join(RACES) + " |", "|" + "---|" * len(RACES)]
        lines.append("| " + " | ".join(_pct(a["gender_by_race"].get(c, float("nan"))) for c in RACES) + " |")
    if a.get("race_confusion"):
        lines += _matrix(a["race_confusion"], list(RACES), "Race confusion (FairFace val, faces; top class)")
    if a.get("gender_confusion"):
        lines += _matrix(a["gender_confusion"], ["female", "male"], "Gender confusion (FairFace val, faces)")
    if a.get("age_confusion"):
        lines += _matrix(a["age_confusion"], list(AGE_BINS), "Age bin confusion (FairFace val, faces)")
    return lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subsets only (CI smoke check)")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default reports/accuracy for a full run)")
    ap.add_argument("--detector", default="yunet+retinaface")
    ap.add_argument(
        "--attribute-model",
        choices=("net", "branch", "heads"),
        default=None,
        help="the attribute network (branch + wide-crop CNN), its branch alone or the earlier linear heads "
        "(default: what the pack picks); for before/after",
    )
    args = ap.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="enface-accuracy-")) if args.quick else REPORT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(get_settings().test_data)
    t_all = time.time()
    pack = load_pack(detector=args.detector)
    if args.attribute_model and hasattr(pack.attributes, "use_net"):
        pack.attributes.use_net = args.attribute_model != "heads"
        pack.attributes._use_wide = args.attribute_model == "net"
        pack.models["attributes"] += f" ({args.attribute_model})"
    an = Analyzer(pack)
    q = QUICK if args.quick else {}

    t = time.time()
    pr = detection_pr(pack.detector, data / "detection_mitcmu", limit=q.get("mitcmu_images"))
    thr = float(pack.detector.threshold)
    p, r = pr_at(pr, thr)
    det = {"threshold": thr, "precision": p, "recall": r, "gt_faces": pr["gt_faces"], "images": pr["images"]}
    det["seconds"] = time.time() - t
    print(f"detection: recall {r:.3f} precision {p:.3f} ({det['seconds']:.0f}s)", file=sys.stderr)

    t = time.time()
    preds = attribute_predictions(an, data / "fairface", "val", limit=q.get("fairface"))
    att = attribute_summary(preds)
    att["seconds"] = time.time() - t
    print(f"attributes: {att['faces_found']} faces ({att['seconds']:.0f}s)", file=sys.stderr)

    t = time.time()
    if args.quick:
        pairs, emb = lfw_quick(an, q["lfw_pairs_per_fold"])
    else:
        from lfw_embed import lfw_embeddings

        pairs, emb, _ = lfw_embeddings(detector=args.detector)
    ver = verification(pairs, emb)
    cal = calibration_for(pack.models["embedder"])
    ver["thresholds"] = {}
    for s in ("80", "85", "90", "95"):
        c = cal.similarity_for(float(s))
        ver["thresholds"][s] = {
            "cosine": c,
            "fmr": float((ver["_imp"] >= c).mean()),
            "tmr": float((ver["_gen"] >= c).mean()) if len(ver["_gen"]) else float("nan"),
        }
    ver["seconds"] = time.time() - t
    print(f"verification: {ver['accuracy']:.4f} ({ver['seconds']:.0f}s)", file=sys.stderr)

    plot_verification(ver, cal, out / "verification_det.png")
    plot_confusion(att, out / "race_confusion.png")
    plot_age(att, out / "age_error_by_bin.png")
    plot_pr(pr, thr, out / "detection_pr.png")
    fig = {
        "pack": pack.version,
        "command": "python bench/accuracy.py"
        + (" --quick" if args.quick else "")
        + (f" --attribute-model {args.attribute_model}" if args.attribute_model else ""),
        "quick": args.quick,
        "seconds": time.time() - t_all,
        "attributes": att,
        "verification": {k: v for k, v in ver.items() if not k.startswith("_")},
        "detection": det,
        "floors": {
            **{k: {"floor": f, "value": att[k], "met": att[k] >= f} for k, f in FLOORS.items()},
            "lfw_accuracy": {"floor": FLOORS_LFW, "value": ver["accuracy"], "met": ver["accuracy"] >= FLOORS_LFW},
        },
    }
    (out / "figures.json").write_text(json.dumps(fig, indent=2) + "\n")
    print(write_markdown(fig, out))
    print(f"report written to {out}", file=sys.stderr)
    return fig


if __name__ == "__main__":
    main()
