"""Every accuracy figure of the analysis core, from ../shared/data, in one Markdown report.

    python bench/accuracy.py            # full sets (about 5 minutes on 2 cores)
    python bench/accuracy.py --quick    # small subsets, for a smoke check

LFW: 5-fold protocol on lfw_dev (threshold chosen on 4 folds, accuracy on the 5th). Score calibration: FMR at
80/85/90/95 on folds 4-5, which the calibration (bench/calibrate.py, folds 1-3) never saw. Detection: CMU+MIT.
Gender and age: FairFace val (age as FairFace's bins).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enface_batch.analyze import Analyzer  # noqa: E402
from enface_batch.evaluation import attribute_scores, detection_scores  # noqa: E402
from enface_batch.models import load_pack  # noqa: E402
from enface_batch.scoring import calibration_for  # noqa: E402
from enface_batch.settings import get_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small subsets only")
    ap.add_argument("--detector", default="yunet+retinaface")
    args = ap.parse_args()
    data = Path(get_settings().test_data)
    pack = load_pack(detector=args.detector)
    an = Analyzer(pack)
    print(f"# Accuracy report\n\nmodel pack: `{pack.version}`\n")
    t = time.time()
    det = detection_scores(an, data / "detection_mitcmu")
    print("## Detection, CMU+MIT (130 scanned scenes, 511 labelled upright frontal faces)\n")
    print("| recall | detections | unmatched detections in labelled images | seconds |\n|---|---|---|---|")
    print(f"| {det['recall'] * 100:.1f}% | {det['detections']} | {det['false_positives']} | {time.time() - t:.0f} |\n")
    t = time.time()
    att = attribute_scores(an, data / "fairface", "val", limit=200 if args.quick else None)
    print("## Gender and age, FairFace val\n")
    print("| images | faces found | gender accuracy | age bin exact | age bin or adjacent | years outside the bin |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {att['images']} | {att['faces_found']} | {att['gender_accuracy'] * 100:.1f}% | "
        f"{att['age_bin_accuracy'] * 100:.1f}% | {att['age_bin_or_adjacent'] * 100:.1f}% | "
        f"{att['age_years_outside_bin']:.1f} |\n"
    )
    cal = calibration_for(pack.models["embedder"])
    print("## Verification and score calibration (lfw_dev; run bench/calibrate.py to recompute)\n")
    print("| score | cosine | FMR on held-out folds 4-5 | TMR on held-out folds 4-5 |\n|---|---|---|---|")
    for s, v in cal.fmr.items():
        print(f"| {s} | {v['cosine']:.3f} | {v['heldout_fmr']:.1e} | {v['heldout_tmr'] * 100:.1f}% |")
    print(f"\n`no_match` = {cal.no_match:g}")


if __name__ == "__main__":
    main()
