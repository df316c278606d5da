"""Train the multi-task attribute branch (gender, FairFace age bin, race) and export it to ONNX.

    pip install -e '.[train]'                       # torch: development only, never needed to run a scan
    python -m enface_batch.train.network            # or `make train-attributes`: feature extraction about
                                                    # 40 min on 2 busy cores the first time (cached), training
                                                    # a few minutes

The branch reads what the registry SFace trunk already computes for every face (its conv_14 map, 1024x7x7,
plus its embedding and pooled conv_12/conv_13 maps), Cydral age-v1's probabilities and pooled features and
Cydral gender-v1's probabilities, pooled map and hidden layer (its wider 32 px dlib chip; kept because it
improved the holdout), each averaged over the face and its mirror image (train/features.py and
train/gender_features.py cache them once per split). It is a learned
per-channel 7x7 spatial pooling of conv_14 (a depthwise convolution, the "GDC" of MobileFaceNet) concatenated
with the pooled blocks, one shared hidden layer, and three softmax outputs. So at run time the trunk runs once
per face and the branch adds a few MFLOPs.

Data: FairFace train + train_extra (../shared/data/fairface, CC BY 4.0, Karkkainen & Joo 2021). A fixed 15 %
of it (seed 0) is held out to measure the schedule, choose race's "unknown" threshold and compare with the
linear heads; the shipped branch is then refitted on all of it with the same schedule. FairFace val is
never read here (bench/accuracy.py reports on it). Fixed seeds and single-threaded-order data, so the same
data gives the same weights up to float rounding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..models.attributes import AGE_BINS, RACES
from .attributes import race_threshold  # race answers "unknown" below the top score where held-out answers reach 70 %
from .features import cache_dir, extract_split

SEED = 0
HOLDOUT = 0.15
VEC_BLOCKS = ("emb", "m13", "m12", "agep", "agef")  # pooled inputs beside the conv_14 map
GENDER_BLOCKS = ("genp", "genf", "genh")  # Cydral gender-v1's block (train/gender_features.py), optional
SHIPPED_BLOCKS = (*VEC_BLOCKS, *GENDER_BLOCKS)  # chosen on the holdout: docs/model_card_attributes.md
HIDDEN = 256
INPUT_DROPOUT = 0.3
LABEL_SMOOTHING = 0.1
DROPOUT = 0.5
WEIGHT_DECAY = 0.05
LR = 2e-3
BATCH = 128
EPOCHS = 8
MEMBERS = 1  # an ensemble of this many branches (seeds 0, 1, ...), averaged in one exported graph
RACE_CLASS_WEIGHT_POWER = 0.5  # race loss weighted by (frequency)^-power: recall of the rarer classes
OUT = Path(__file__).resolve().parents[1] / "data" / "attribute_net.onnx"
HOLDOUT_PROBS = cache_dir("train").parent / "holdout_probs.npz"  # the holdout run's predictions, for wide_net
TASKS = {"gender": 2, "age": len(AGE_BINS), "race": len(RACES)}


def load(
    splits: tuple[str, ...] = ("train", "train_extra"),
    *,
    vec_blocks: tuple[str, ...] = VEC_BLOCKS,
    cached_only: bool = False,
    log=print,
) -> dict:
    parts = [p for p in (extract_split(s, cached_only=cached_only, log=log) for s in splits) if p]
    keys = ["s14", "c14", *[b for b in vec_blocks if b not in GENDER_BLOCKS], *TASKS, "image"]
    data = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}
    extra = [b for b in vec_blocks if b in GENDER_BLOCKS]
    if extra:  # joined by image name: the gender block has its own cache beside attr_v2
        from . import gender_features

        cached = {}
        for s in splits:
            if not cached_only:
                gender_features.extract_split(s, log=log)
            g = gender_features.load(s)
            cached.update({str(name): {b: g[b][i] for b in extra} for i, name in enumerate(g.get("image", []))})
        keep = np.array([str(name) in cached for name in data["image"]])
        if not keep.all():
            log(f"{int((~keep).sum())} faces lack the gender block (no face found by that pass): dropped")
        data = {k: v[keep] for k, v in data.items()}
        for b in extra:
            data[b] = np.stack([cached[str(name)][b] for name in data["image"]])
    return data


def _model(vec_dim: int, mean: np.ndarray, scale: np.ndarray):
    import torch
    from torch import nn

    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # a depthwise 7x7 convolution over a 7x7 map, written as a weighted sum (torch's CPU grouped conv is slow)
            self.gdc = nn.Parameter(torch.full((1024, 7, 7), 1 / 49.0))
            self.gdc_bn = nn.BatchNorm1d(1024)
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
            self.hidden = nn.Sequential(
                nn.Dropout(INPUT_DROPOUT),
                nn.Linear(1024 + vec_dim, HIDDEN),
                nn.BatchNorm1d(HIDDEN),
                nn.ReLU(),
                nn.Dropout(DROPOUT),
            )
            self.heads = nn.ModuleDict({t: nn.Linear(HIDDEN, k) for t, k in TASKS.items()})

        def forward(self, s14, vec):
            g = self.gdc_bn((s14 * self.gdc).sum((2, 3)))
            h = self.hidden(torch.cat([g, (vec - self.mean) / self.scale], 1))
            return [self.heads[t](h) for t in TASKS]

    return Branch()


def fit(
    data: dict[str, np.ndarray],
    idx: np.ndarray,
    epochs: int,
    *,
    vec_blocks: tuple[str, ...] = VEC_BLOCKS,
    evaluate: np.ndarray | None = None,
    seed: int = SEED,
    log=print,
):
    """Train on rows idx for `epochs`; with `evaluate`, log holdout figures per epoch and return them too.
    `seed` sets the initial weights, dropout and batch order (never which faces are held out)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vec = np.concatenate([data[b] for b in vec_blocks], 1).astype(np.float32)
    mean, scale = vec[idx].mean(0), vec[idx].std(0) + 1e-6
    model = _model(vec.shape[1], mean, scale)
    steps = epochs * int(np.ceil(len(idx) / BATCH))
    opt, sched = one_cycle([{"params": list(model.parameters()), "lr": LR}], steps, 0.15)
    s14 = data["s14"]

    def forward(b):
        return model(torch.from_numpy(s14[b].astype(np.float32)), torch.from_numpy(vec[b]))

    held = lambda: predict(model, s14, vec, evaluate)  # noqa: E731
    history = run_epochs(model, data, idx, epochs, rng, forward, opt, sched, held, evaluate, log)
    return model, history


def fit_members(data, idx, epochs, members: int, *, vec_blocks, evaluate=None, log=print):
    """`members` branches on the same faces, seeds SEED, SEED + 1, ...: an ensemble (averaged probabilities)."""
    models, history = [], []
    for k in range(members):
        if members > 1:
            log(f"member {k + 1}/{members} (seed {SEED + k})")
        m, h = fit(data, idx, epochs, vec_blocks=vec_blocks, evaluate=evaluate, seed=SEED + k, log=log)
        models.append(m)
        history += [{"member": k + 1, **e} for e in h]
    return (models[0] if members == 1 else Ensemble(models)), history


def Ensemble(models: list):  # noqa: N802 (a class made on demand: torch is imported only when training)
    """Branches whose probabilities are averaged; returns log-probabilities so that export_onnx's softmax gives
    the average back exactly."""
    import torch
    from torch import nn

    class _Ensemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(models)

        def forward(self, s14, vec):
            outs = [m(s14, vec) for m in self.members]
            return [
                torch.log(torch.stack([torch.softmax(o[j], 1) for o in outs]).mean(0) + 1e-12)
                for j in range(len(TASKS))
            ]

    return _Ensemble()


def one_cycle(groups: list[dict], steps: int, pct_start: float, weight_decay: float = WEIGHT_DECAY) -> tuple:
    """AdamW over parameter groups (each with its own peak "lr", and "weight_decay" if not the default) under
    one one-cycle schedule of `steps` steps: (optimiser, scheduler)."""
    import torch

    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    peaks = [g["lr"] for g in groups]
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=steps, pct_start=pct_start)


def loss_targets(data: dict, idx: np.ndarray) -> tuple[dict, dict]:
    """Per-task class weights (race weighted by class frequency^-RACE_CLASS_WEIGHT_POWER over the rows being
    fitted; the others unweighted) and the label tensors, as train_step takes them."""
    import torch

    counts = np.bincount(data["race"][idx], minlength=len(RACES))
    rw = (counts.sum() / counts) ** RACE_CLASS_WEIGHT_POWER
    weights = {"race": torch.tensor(rw / rw.mean(), dtype=torch.float32), "gender": None, "age": None}
    return weights, {t: torch.tensor(data[t]) for t in TASKS}


def run_epochs(model, data: dict, idx: np.ndarray, epochs: int, rng, forward, opt, sched, held, evaluate, log):
    """The training loop every trainer here shares: per epoch, the rows of `idx` in a fresh order (`rng`), in
    batches of BATCH (sorted within a batch), `forward(b)` -> the tasks' logits, one train_step each; then the
    loss, and with `evaluate` the holdout figures of `held()` (its probabilities), logged and returned."""
    weights, labels = loss_targets(data, idx)
    per_epoch = int(np.ceil(len(idx) / BATCH))
    history: list[dict] = []
    for ep in range(epochs):
        model.train()
        t0, total = time.time(), 0.0
        for b in np.array_split(rng.permutation(idx), per_epoch):
            b = np.sort(b)
            total += train_step(forward(b), labels, weights, b, opt, sched)
        msg = f"epoch {ep + 1}/{epochs}: loss {total / len(idx):.3f} ({time.time() - t0:.0f}s)"
        if evaluate is not None:
            fig = figures(held(), data, evaluate)
            history.append({"epoch": ep + 1, **fig})
            msg += " holdout " + json.dumps({k: round(v, 4) for k, v in fig.items() if not isinstance(v, dict)})
        log(msg)
    return history


def predict(model, s14: np.ndarray, vec: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    model.eval()
    outs: dict[str, list] = {t: [] for t in TASKS}
    with torch.no_grad():
        for b in np.array_split(idx, max(1, int(np.ceil(len(idx) / 512)))):
            out = model(torch.from_numpy(s14[b].astype(np.float32)), torch.from_numpy(vec[b]))
            for t, o in zip(TASKS, out, strict=True):
                outs[t].append(torch.softmax(o, 1).numpy())
    return {t: np.concatenate(v) for t, v in outs.items()}


def figures(p: dict[str, np.ndarray], data: dict[str, np.ndarray], idx: np.ndarray) -> dict:
    y = {t: data[t][idx] for t in TASKS}
    race = p["race"].argmax(1)
    recall = {c: float((race[y["race"] == i] == i).mean()) for i, c in enumerate(RACES)}
    return {
        "gender": float((p["gender"].argmax(1) == y["gender"]).mean()),
        "race": float((race == y["race"]).mean()),
        "race_min_recall": min(recall.values()),
        "age_bin": float((p["age"].argmax(1) == y["age"]).mean()),
        "age_adjacent": float((np.abs(p["age"].argmax(1) - y["age"]) <= 1).mean()),
        "race_recall": recall,
    }


def versus_heads(data: dict[str, np.ndarray], hold: np.ndarray, p: dict[str, np.ndarray]) -> dict:
    """The network's holdout run against the shipped linear heads and against both averaged, on the held-out
    train_extra faces only (the heads were fitted on all of fairface/train, so only train_extra is unseen by
    both). "_ensemble" keeps the averaged probabilities for the race threshold."""
    from ..models.heads import Heads

    mask = np.char.startswith(data["image"][hold].astype(str), "train_extra/")
    if not mask.any():
        return {}
    rows = hold[mask]
    heads = Heads()
    feats = {b: np.asarray(data[b][rows], np.float32) for b in ("emb", "c14", "m13", "m12", "agep", "agef")}
    lin = {t: heads.proba(t, feats) for t in TASKS}
    net = {t: v[mask] for t, v in p.items()}
    both = {t: (net[t] + lin[t]) / 2 for t in TASKS}
    out: dict = {"faces": int(mask.sum()), "_rows": rows, "_ensemble": both}
    for name, q in (("network", net), ("linear_heads", lin), ("network+heads", both)):
        out[name] = {k: v for k, v in figures(q, data, rows).items() if k != "race_recall"}
    return out


def race_offsets(p: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per-class constants added to race's log-probabilities, chosen on `rows` (coordinate search) to maximise
    accuracy + lowest class recall: what raising the weakest class would cost the others."""
    lp = np.log(p + 1e-9)

    def gain(b: np.ndarray) -> float:
        pred = (lp[rows] + b).argmax(1)
        recall = [(pred[y[rows] == c] == c).mean() for c in range(p.shape[1]) if (y[rows] == c).any()]
        return float((pred == y[rows]).mean() + min(recall))

    b = np.zeros(p.shape[1])
    for _ in range(4):
        for c in range(p.shape[1]):
            tries = [np.where(np.arange(p.shape[1]) == c, v, b) for v in np.linspace(-1, 1, 41)]
            b = max(tries, key=gain)
    return b


def race_offsets_cross_fitted(p: np.ndarray, y: np.ndarray) -> dict:
    """race_offsets chosen on one half of the holdout and measured on the other (both ways), not applied."""
    half = np.arange(len(y)) % 2 == 0
    pred = np.empty(len(y), int)
    for a in (half, ~half):
        pred[~a] = (np.log(p[~a] + 1e-9) + race_offsets(p, y, np.flatnonzero(a))).argmax(1)
    recall = {c: float((pred[y == i] == i).mean()) for i, c in enumerate(RACES)}
    return {"race": float((pred == y).mean()), "race_min_recall": min(recall.values()), "race_recall": recall}


def score(h: dict) -> float:
    """Model selection on the holdout: the three tasks' accuracies together (age counted right-or-adjacent)."""
    return h["gender"] + h["race"] + h["age_adjacent"] + 0.5 * h["age_bin"]


def train_step(out: tuple, labels: dict, weights: dict, b: np.ndarray, opt, sched) -> float:
    """One optimiser step on the summed multi-task loss of batch `b`; returns that loss times the batch size."""
    import torch.nn.functional as F

    loss = sum(
        F.cross_entropy(o, labels[t][b], weight=weights[t], label_smoothing=LABEL_SMOOTHING)
        for o, t in zip(out, TASKS, strict=True)
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach()) * len(b)


def export(model, vec_dim: int, out: Path, meta: dict) -> None:
    import torch

    export_onnx(model, (torch.zeros(2, 1024, 7, 7), torch.zeros(2, vec_dim)), ["s14", "vec"], out, meta)


def export_onnx(model, args: tuple, input_names: list[str], out: Path, meta: dict) -> None:
    """The model with softmax heads as ONNX (batch axis dynamic), `meta` as JSON in its metadata."""
    import onnx
    import torch

    model.eval()

    class WithSoftmax(torch.nn.Module):
        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, *x):
            return tuple(torch.softmax(o, 1) for o in self.m(*x))

    tmp = out.with_suffix(".tmp.onnx")
    torch.onnx.export(
        WithSoftmax(model),
        args,
        str(tmp),
        input_names=input_names,
        output_names=[f"{t}_p" for t in TASKS],
        dynamic_axes={**{n: {0: "n"} for n in input_names}, **{f"{t}_p": {0: "n"} for t in TASKS}},
        opset_version=17,
        dynamo=False,
    )
    m = onnx.load(str(tmp))
    m.metadata_props.add(key="enface_meta", value=json.dumps(meta))
    onnx.save(m, str(out))
    tmp.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train the FairFace attribute branch and export it to ONNX")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--epochs",
        type=int,
        default=EPOCHS,
        help="epochs (one-cycle schedule), the same for the holdout run and the shipped fit",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--holdout-only", action="store_true", help="report the holdout run; export nothing")
    ap.add_argument("--report", type=Path, default=None, help="write the holdout figures per epoch here (JSON)")
    ap.add_argument(
        "--cached-only", action="store_true", help="train on the feature shards already cached; extract nothing"
    )
    ap.add_argument("--splits", default="train,train_extra", help="FairFace training splits (never val)")
    ap.add_argument("--members", type=int, default=MEMBERS, help="branches trained with different seeds and averaged")
    ap.add_argument(
        "--vec-blocks",
        default=",".join(SHIPPED_BLOCKS),
        help=f"pooled input blocks beside the conv_14 map (default: what ships); without Cydral gender-v1's: "
        f"{','.join(VEC_BLOCKS)}",
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    splits = tuple(x for x in args.splits.split(",") if x)
    if "val" in splits:
        ap.error("val is for reporting only (bench/accuracy.py)")
    blocks = tuple(x for x in args.vec_blocks.split(",") if x)
    data = load(splits, vec_blocks=blocks, cached_only=args.cached_only, log=log)
    n = len(data["race"])
    perm = np.random.default_rng(SEED).permutation(n)
    hold, fit_idx = np.sort(perm[: int(n * HOLDOUT)]), np.sort(perm[int(n * HOLDOUT) :])
    log(f"{n} faces: {len(fit_idx)} to fit, {len(hold)} held out")
    model, history = fit_members(data, fit_idx, args.epochs, args.members, vec_blocks=blocks, evaluate=hold, log=log)
    vec = np.concatenate([data[b] for b in blocks], 1).astype(np.float32)
    # One fixed schedule (no early stopping): the holdout run shows where it ends, the shipped fit repeats it on
    # every face. Race's "unknown" threshold comes from the holdout run's final model.
    p = predict(model, data["s14"], vec, hold)
    race_min = race_threshold(p["race"], data["race"][hold])
    answered = p["race"].max(1) >= race_min
    holdout = {
        **figures(p, data, hold),
        "race_min_score": race_min,
        "race_answered": float(answered.mean()),
        "race_accuracy_unknown_wrong": float(((p["race"].argmax(1) == data["race"][hold]) & answered).mean()),
        "best_epoch": max(history[-args.epochs :], key=score)["epoch"],
        "members": args.members,
    }
    log(f"holdout after {args.epochs} epochs: {json.dumps(holdout)}")
    # the wide-crop CNN (train/wide_net.py) is fused with these held-out probabilities and judged on them
    HOLDOUT_PROBS.parent.mkdir(parents=True, exist_ok=True)
    np.savez(HOLDOUT_PROBS, image=data["image"][hold], **{t: p[t] for t in TASKS})
    holdout["race_offsets_cross_fitted"] = race_offsets_cross_fitted(p["race"], data["race"][hold])
    log(f"race with per-class offsets, cross-fitted (not applied): {json.dumps(holdout['race_offsets_cross_fitted'])}")
    vs = versus_heads(data, hold, p)
    holdout["vs_linear_heads"] = {k: v for k, v in vs.items() if not k.startswith("_")}
    log(f"against the shipped linear heads: {json.dumps(holdout['vs_linear_heads'])}")
    # Averaging with the shipped heads is kept when it scores better on the unseen (train_extra) holdout faces;
    # race's threshold then comes from the averaged probabilities on those faces.
    combine = bool(vs) and score(vs["network+heads"]) > score(vs["network"])
    if combine:
        race_min = race_threshold(vs["_ensemble"]["race"], data["race"][vs["_rows"]])
        holdout["race_min_score"] = race_min
    holdout["combine_with_linear_heads"] = combine
    if args.report:
        args.report.write_text(json.dumps({"holdout": holdout, "history": history}, indent=1) + "\n")
    if args.holdout_only:
        return 0
    final, _ = fit_members(data, np.arange(n), args.epochs, args.members, vec_blocks=blocks, log=log)
    meta = {
        "tasks": {"gender": ["female", "male"], "age": list(AGE_BINS), "race": list(RACES)},
        "vec_blocks": list(blocks),
        "combine_with_linear_heads": combine,
        "race_min_score": race_min,
        "epochs": args.epochs,
        "members": args.members,
        "trained_on": f"FairFace {' + '.join(splits)} ({n} faces; CC BY 4.0, Karkkainen & Joo 2021)",
        "holdout": holdout,
        "holdout_faces": len(hold),
        "command": "python -m enface_batch.train.network",
        "seed": SEED,
    }
    export(final, vec.shape[1], args.out, meta)
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
