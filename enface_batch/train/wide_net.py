"""Train the wide-crop attribute CNN (gender, FairFace age bin, race) from scratch; export it only if it helps.

    python -m enface_batch.train.wide_net     # after train/network.py; an experiment, not part of
                                              # `make train-attributes` (it did not win: model card)

Why: the attribute branch (train/network.py) reads SFace, an identity trunk trained to ignore hair, make-up and
skin context, on a tight 112 px crop. This small CNN sees a wider 64 px aligned crop (models/align.wide_crop:
hair, ears, neck, some background) and is trained for the three tasks only, with augmentation (mirror, small
rotation / scale / shift, colour jitter). Its probabilities (face and mirror averaged) would be averaged with
the branch's at run time (models/attribute_net.py fuses them whenever enface_batch/data/attribute_wide.onnx
exists).

Data: FairFace train + train_extra wide crops (train/views.py caches them once, with a margin). The holdout is exactly
the branch's holdout (the faces network.py holds out; it saves its predictions on them), so the fused figures
are measured on faces neither model was fitted on. The fusion weight is chosen on the holdout and, because of
that, also measured cross-fitted (chosen on one half, measured on the other); the file is exported only when the
cross-fitted fusion scores better than the branch alone. Race's "unknown" threshold then comes from the fused
holdout probabilities. The CNN is the holdout run's model (fitted on the other 85 %; no refit, to keep the
command within a CPU budget). FairFace val is never read here. Seeds fixed (two runs give identical epochs).

Measured (docs/model_card_attributes.md): 10 epochs, about 40 s each on 2 free cores (3-7 min on the shared
machine), reach gender 82.2 %, race 52.2 % on the holdout, far below the branch (93.3 / 70.2 %); averaged
half and half with the branch it lowers every figure; the best weight (0.1) gains nothing cross-fitted, so
nothing ships.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..models.align import WIDE_SIZE
from ..models.attributes import AGE_BINS, RACES
from ..settings import get_settings
from . import views as view_cache
from .attributes import race_threshold
from .network import (
    BATCH,
    HOLDOUT_PROBS,
    TASKS,
    export_onnx,
    figures,
    one_cycle,
    run_epochs,
    score,
)

SEED = 0
EPOCHS = 10
LR = 3e-3
WEIGHT_DECAY = 5e-4
WIDTHS = (24, 48, 96, 192)
FUSIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # weights of the CNN's probabilities against the branch's, tried
OUT = Path(__file__).resolve().parents[1] / "data" / "attribute_wide.onnx"


TRUNKS = ("cnn", "cydral")  # a CNN from scratch, or Cydral age-v1 (pretrained on dlib chips) fine-tuned
VIEW_CHOICES = tuple(view_cache.VIEWS)


def load(
    splits: tuple[str, ...] = ("train", "train_extra"), view: str = "wide", log=print
) -> tuple[dict[str, np.ndarray], int]:
    """The faces' crops of `view` (as "crops") and labels, and the crops' margin on every side."""
    parts = [dict(view_cache.extract_split(s, log=log)) for s in splits]
    for p in parts:
        p["crops"] = p.pop(view)
        for v in view_cache.VIEWS:
            p.pop(v, None)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, view_cache.MARGIN


def branch_holdout() -> list[str]:
    """The image names train/network.py holds out: the same draw over the same cached faces (its load order)."""
    from .features import SHARD, cache_dir, split_rows
    from .network import HOLDOUT
    from .network import SEED as BRANCH_SEED

    names = []
    root = Path(get_settings().test_data) / "fairface"
    for split in ("train", "train_extra"):
        for start in range(0, len(split_rows(root, split)), SHARD):
            d = cache_dir(split) / f"{start:05d}"
            if not (d / "done").exists():
                raise SystemExit(f"{d} missing: run python -m enface_batch.train.network first")
            names += [str(s) for s in np.load(d / "image.npy")]
    perm = np.random.default_rng(BRANCH_SEED).permutation(len(names))
    return [names[i] for i in np.sort(perm[: int(len(names) * HOLDOUT)])]


def _model(trunk: str = "cnn"):
    from torch import nn

    if trunk == "cydral":
        return _cydral()

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    class WideNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = WIDTHS
            layers = block(3, w[0], 2) + block(w[0], w[0], 1)  # 32 px
            for a, b in zip(w, w[1:], strict=False):  # 16, 8, 4 px
                layers += block(a, b, 2) + block(b, b, 1)
            self.body = nn.Sequential(*layers)
            self.drop = nn.Dropout(0.3)
            self.heads = nn.ModuleDict({t: nn.Linear(w[-1], k) for t, k in TASKS.items()})

        def forward(self, x):  # x: [N, 3, 64, 64] RGB, 0..255
            h = self.drop(self.body(x / 127.5 - 1.0).mean((2, 3)))
            return [self.heads[t](h) for t in TASKS]

    return WideNet()


def _cydral():
    """Cydral age-v1 (registry, pretrained for age on dlib chips) up to its last ReLU map, and three new heads."""
    import torch
    from torch import nn

    from ..models.fetch import ensure_files
    from ..models.heads import FaceFeatures
    from .onnx_trunk import trunk

    body = trunk(ensure_files(["cydral_age_v1.onnx"])["cydral_age_v1.onnx"], "layer_3_relu")

    class CydralNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.register_buffer("mean", torch.tensor(FaceFeatures.CYDRAL_MEAN).view(1, 3, 1, 1))
            self.drop = nn.Dropout(0.3)
            self.heads = nn.ModuleDict({t: nn.Linear(256, k) for t, k in TASKS.items()})

        def forward(self, x):  # x: [N, 3, S, S] RGB, 0..255
            h = self.drop(self.body((x - self.mean) / 256.0).mean((2, 3)))
            return [self.heads[t](h) for t in TASKS]

    return CydralNet()


def _centre(x, margin: int):
    return x[:, :, margin : x.shape[2] - margin, margin : x.shape[3] - margin] if margin else x


def augment(x, gen):
    """Mirror, rotation +-10 deg, scale 0.9..1.1, shift +-6 %, brightness / contrast / saturation jitter."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    ang, sc = u(-10, 10) * math.pi / 180, u(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang) / sc * flip, -torch.sin(ang) / sc
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang) / sc * flip, torch.cos(ang) / sc
    theta[:, 0, 2], theta[:, 1, 2] = u(-0.12, 0.12), u(-0.12, 0.12)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * u(0.6, 1.4).view(n, 1, 1, 1)
    m = x.mean((1, 2, 3), keepdim=True)
    x = m + (x - m) * u(0.7, 1.3).view(n, 1, 1, 1)
    return (x * u(0.7, 1.3).view(n, 1, 1, 1)).clamp(0, 255)


def predict(model, crops: np.ndarray, idx: np.ndarray, margin: int = 0) -> dict[str, np.ndarray]:
    """Probabilities, face and mirror averaged (as at run time)."""
    import torch

    model.eval()
    outs: dict[str, list] = {t: [] for t in TASKS}
    with torch.no_grad():
        for b in np.array_split(idx, max(1, int(np.ceil(len(idx) / 256)))):
            x = _centre(torch.from_numpy(np.asarray(crops[b])).permute(0, 3, 1, 2).float(), margin)
            a, m = model(x), model(x.flip(3))
            for t, o, om in zip(TASKS, a, m, strict=True):
                outs[t].append(((torch.softmax(o, 1) + torch.softmax(om, 1)) / 2).numpy())
    return {t: np.concatenate(v) for t, v in outs.items()}


def fit(
    data: dict,
    idx: np.ndarray,
    epochs: int,
    *,
    trunk: str = "cnn",
    margin: int = 0,
    lr: float = LR,
    trunk_lr: float = LR,
    evaluate: np.ndarray | None = None,
    log=print,
):
    import torch

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = _model(trunk)
    groups = [
        {"params": list(model.body.parameters()), "lr": trunk_lr},
        {"params": list(model.heads.parameters()), "lr": lr},
    ]
    per_epoch = int(np.ceil(len(idx) / BATCH))
    opt, sched = one_cycle(groups, epochs * per_epoch, 0.2, weight_decay=WEIGHT_DECAY)
    crops = data["crops"]

    def forward(b):
        x = torch.from_numpy(np.asarray(crops[b])).permute(0, 3, 1, 2).float()
        return model(_centre(augment(x, gen), margin))

    held = lambda: predict(model, crops, evaluate, margin)  # noqa: E731
    history = run_epochs(model, data, idx, epochs, rng, forward, opt, sched, held, evaluate, log)
    return model, history


def export(model, out: Path, meta: dict, size: int = WIDE_SIZE) -> None:
    import torch

    export_onnx(model, (torch.zeros(2, 3, size, size),), ["wide"], out, meta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the wide-crop attribute CNN and export it to ONNX")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--limit", type=int, default=0, help="fit on this many faces only (quick trials)")
    ap.add_argument("--holdout-only", action="store_true", help="report the holdout run; export nothing")
    ap.add_argument("--report", type=Path, default=None, help="write the holdout figures per epoch here (JSON)")
    ap.add_argument("--trunk", choices=TRUNKS, default="cnn", help="from scratch, or Cydral age-v1 fine-tuned")
    ap.add_argument("--view", choices=VIEW_CHOICES, default="wide", help="the aligned view it reads")
    ap.add_argument("--lr", type=float, default=LR, help="peak learning rate of the heads")
    ap.add_argument("--trunk-lr", type=float, default=None, help="peak learning rate of the trunk (default: --lr)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    data, margin = load(view=args.view, log=log)
    held_names = branch_holdout()
    names = data["image"].astype(str)
    row = {s: i for i, s in enumerate(names)}
    fit_idx = np.flatnonzero(~np.isin(names, held_names))
    if args.limit:
        fit_idx = np.sort(np.random.default_rng(SEED).permutation(fit_idx)[: args.limit])
    hold = np.array([row[s] for s in held_names if s in row])
    log(f"{len(names)} wide crops: {len(fit_idx)} to fit, {len(hold)} held out")
    trunk_lr = args.lr if args.trunk_lr is None else args.trunk_lr
    model, history = fit(
        data,
        fit_idx,
        args.epochs,
        trunk=args.trunk,
        margin=margin,
        lr=args.lr,
        trunk_lr=trunk_lr,
        evaluate=hold,
        log=log,
    )
    if not HOLDOUT_PROBS.exists():
        ap.error(f"{HOLDOUT_PROBS} missing: run python -m enface_batch.train.network first")
    branch = dict(np.load(HOLDOUT_PROBS))
    # the branch's holdout faces in its order, so both models' probabilities line up row by row
    if set(branch["image"].astype(str)) != set(held_names):
        raise SystemExit("the branch's saved holdout is not the one derived here: rerun train.network")
    both = np.array([str(s) in row for s in branch["image"]])
    hold = np.array([row[str(s)] for s in branch["image"][both]])
    torch.save(model.state_dict(), view_cache.cache_dir("train").parent / "holdout_model.pt")  # for later analysis
    q = predict(model, data["crops"], hold, margin)
    p = {t: branch[t][both] for t in TASKS}
    mix = lambda w, rows=slice(None): {t: (1 - w) * p[t][rows] + w * q[t][rows] for t in TASKS}  # noqa: E731
    by_weight = {w: score(figures(mix(w), data, hold)) for w in FUSIONS}
    weight = max(FUSIONS, key=lambda w: (by_weight[w], -w))  # ties: the smaller weight
    # the weight is chosen on the holdout, so also report it cross-fitted: chosen on one half, measured on the other
    halves = np.arange(len(hold)) % 2 == 0
    cross = {t: np.zeros_like(p[t]) for t in TASKS}
    for a in (halves, ~halves):
        w_a = max(FUSIONS, key=lambda w, a=a: (score(figures(mix(w, a), data, hold[a])), -w))
        for t in TASKS:
            cross[t][~a] = mix(w_a, ~a)[t]
    fused = mix(weight)
    y = data["race"][hold]
    race_min = race_threshold(fused["race"], y)
    report = {
        "faces": len(hold),
        "branch": figures(p, data, hold),
        "wide_cnn": figures(q, data, hold),
        "fusion_weight": weight,
        "score_by_weight": {str(w): v for w, v in by_weight.items()},
        "fused": figures(fused, data, hold),
        "fused_cross_fitted": figures(cross, data, hold),
        "fused_race_min_score": race_min,
        "fused_race_accuracy_unknown_wrong": float(
            ((fused["race"].argmax(1) == y) & (fused["race"].max(1) >= race_min)).mean()
        ),
    }
    report["keep"] = weight > 0 and score(report["fused_cross_fitted"]) > score(report["branch"])
    log(f"fusion weight {weight}; score by weight {json.dumps(report['score_by_weight'])}")
    for k in ("branch", "wide_cnn", "fused", "fused_cross_fitted"):
        log(f"holdout {k}: " + json.dumps({a: round(b, 4) for a, b in report[k].items() if not isinstance(b, dict)}))
    log(f"race recall fused: {json.dumps({c: round(v, 3) for c, v in report['fused']['race_recall'].items()})}")
    if args.report:
        args.report.write_text(json.dumps({"holdout": report, "history": history}, indent=1) + "\n")
    if args.holdout_only:
        return 0
    if not report["keep"]:
        log("the fused model does not beat the branch alone on the holdout: nothing exported")
        if args.out.exists():
            args.out.unlink()
        return 0
    meta = {
        "tasks": {"gender": ["female", "male"], "age": list(AGE_BINS), "race": list(RACES)},
        "input": f"RGB 0..255, [N, 3, {WIDE_SIZE}, {WIDE_SIZE}], models/align.wide_crop; face and mirror averaged",
        "fusion_weight": weight,
        "race_min_score": race_min,
        "epochs": args.epochs,
        "trained_on": f"FairFace train + train_extra minus the holdout ({len(fit_idx)} faces; CC BY 4.0, "
        "Karkkainen & Joo 2021)",
        "holdout": {k: v for k, v in report.items() if k != "branch"},
        "command": "python -m enface_batch.train.wide_net",
        "seed": SEED,
    }
    export(model, args.out, meta, size=data["crops"].shape[1] - 2 * margin)
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
