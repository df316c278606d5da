"""Experiment: fine-tune SFace's last two blocks for gender, age and race, with the attribute branch on top,
and measure it on the branch's holdout (development only, needs torch; nothing is exported).

    python -m enface_batch.train.sface_blocks extract train train_extra   # cache the maps, about 7 min
    python -m enface_batch.train.sface_blocks --report F                  # holdout run, about 25 min (2 cores)
    python -m enface_batch.train.sface_blocks --augment --epochs 6 --blocks-lr 3e-4    # on augmented crops

Why: the shipped branch (train/network.py) reads SFace's conv_14 map frozen, and SFace was trained for
identity, not for gender or race. Its last two blocks (conv_13's pointwise, conv_14's depthwise and pointwise
convolutions, 1.6 M weights, 7x7 maps) are re-trained here from their registry weights, so the map the branch
pools can move toward the three tasks, while the trunk below them (and the identity embedding) would stay the
registry's: at run time SFace would expose conv_13_dw_relu and a graph of about 80 MFLOPs per view would run
on it.

Measured (docs/model_card_attributes.md, "Fine-tuned trunks"): no better than the frozen branch on the holdout
(score 2.870 against 2.885 on cached maps: the training loss falls while the holdout stalls from epoch 5;
2.889 with --augment, which trains on augmented crops); averaged with the branch, the augmented run gains 0.8
points of race. Neither meets the issue's aims, so there is no export path and no run-time hook.

Data: the branch's cached pooled blocks (train/features.py, train/gender_features.py) and, cached once here,
SFace's conv_13_dw_relu map of every face and of its mirror image (float16, <model cache>/../bench/sface13_v1/).
The holdout is exactly the branch's (same faces, same seed), so the figures compare with the shipped model's.
FairFace val is never read here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..models.align import arcface_crop
from ..models.fetch import ensure_files
from ..models.heads import _with_outputs
from ..models.session import Model
from ..settings import get_settings
from .attributes import race_threshold
from .features import SHARD, _central, split_rows

VERSION = "sface13_v1"
CUT = "conv_13_dw_relu"  # [N, 512, 7, 7]: the input of the blocks re-trained here
TOP = "conv_14_relu"  # [N, 1024, 7, 7]: what the branch pools
HOLDOUT_PROBS = Path(get_settings().model_cache).parent / "bench" / VERSION / "holdout_probs.npz"


def cache_dir(split: str) -> Path:
    return Path(get_settings().model_cache).parent / "bench" / VERSION / split


def extract_split(split: str, *, threads: int | None = 1, log=print) -> dict[str, np.ndarray]:
    """SFace's CUT map of every face of a split, face and mirror ([N, 2, 512, 7, 7] float16), cached by shard."""
    from .. import imaging
    from ..models import load_pack

    root = Path(get_settings().test_data) / "fairface"
    rows = split_rows(root, split)
    pack = sface = None
    parts = []
    for start in range(0, len(rows), SHARD):
        out = cache_dir(split) / f"{start:05d}"
        if not (out / "done").exists():
            if pack is None:
                pack = load_pack("embedded", threads=threads)
                path = ensure_files(["sface_2021dec.onnx"])["sface_2021dec.onnx"]
                sface = Model(_with_outputs(path, [CUT]), threads=threads)
            t0, maps, names = time.time(), [], []
            for row in rows[start : start + SHARD]:
                rgb = imaging.load(str(root / row["image"])).rgb
                det = pack.detector.detect(rgb)
                j = _central(det.boxes, rgb.shape[1], rgb.shape[0])
                if j is None:
                    continue
                arc = arcface_crop(rgb, det.kps[j])
                x = np.stack([arc, arc[:, ::-1]]).astype(np.float32).transpose(0, 3, 1, 2)
                maps.append(sface.run(np.ascontiguousarray(x))[-1].astype(np.float16))
                names.append(row["image"])
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / "x13.npy", np.stack(maps))
            np.save(out / "image.npy", np.array(names))
            (out / "done").write_text("ok\n")
            log(f"{split} [{start}, {start + SHARD}): {len(names)} faces in {time.time() - t0:.0f}s")
        parts.append({p.stem: np.load(p) for p in sorted(out.glob("*.npy"))})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load(splits: tuple[str, ...], blocks: tuple[str, ...], log=print) -> dict[str, np.ndarray]:
    """The branch's training data (train/network.load, cached blocks only) with each face's CUT maps joined in
    by image name, in the branch's order (so its holdout draw selects the same faces)."""
    from . import network

    data = network.load(splits, vec_blocks=blocks, cached_only=True, log=log)
    data.pop("s14")  # the frozen conv_14 map: recomputed here by the blocks being trained
    maps = {s: extract_split(s, log=log) for s in splits}
    where = {str(name): (s, i) for s, m in maps.items() for i, name in enumerate(m["image"])}
    keep = np.array([str(name) in where for name in data["image"]])
    if not keep.all():
        log(f"{int((~keep).sum())} faces lack a cached map: dropped")
        data = {k: v[keep] for k, v in data.items()}
    data["x13"] = np.stack([maps[s]["x13"][i] for s, i in (where[str(n)] for n in data["image"])])
    return data


def _model(vec_dim: int, mean: np.ndarray, scale: np.ndarray):
    from torch import nn

    from . import network
    from .onnx_trunk import trunk

    blocks = trunk(ensure_files(["sface_2021dec.onnx"])["sface_2021dec.onnx"], TOP, CUT)
    branch = network._model(vec_dim, mean, scale)

    class BlocksNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks, self.branch = blocks, branch

        def forward(self, x13, vec):  # x13: [N, 2, 512, 7, 7], the face's map and its mirror's
            if x13.dim() == 4:  # one (augmented) view per face, while training with --augment
                return self.branch(self.blocks(x13), vec)
            n = x13.shape[0]
            top = self.blocks(x13.reshape(2 * n, *x13.shape[2:])).reshape(n, 2, -1, 7, 7)
            # the mirror's map flipped back, both averaged: what the frozen branch reads as s14
            return self.branch((top[:, 0] + top[:, 1].flip(3)) / 2, vec)

    return BlocksNet()


class Augmented:
    """x13 maps of augmented ArcFace crops, computed per batch: the crops (train/views.py "arc", cached with a
    margin) go through train/wide_net.augment (mirror, rotation, scale, shift, colour), lose the margin, and
    SFace runs on them in onnxruntime up to CUT (the frozen part; torch is several times slower there)."""

    def __init__(self, data: dict, threads: int, log=print) -> None:
        from . import views

        parts = {s: views.extract_split(s, log=log) for s in ("train", "train_extra")}
        where = {str(n): (s, i) for s, m in parts.items() for i, n in enumerate(m["image"])}
        self.crops = np.stack([np.asarray(parts[s]["arc"][i]) for s, i in (where[str(n)] for n in data["image"])])
        self.margin = views.MARGIN
        path = ensure_files(["sface_2021dec.onnx"])["sface_2021dec.onnx"]
        self.sface = Model(_with_outputs(path, [CUT]), threads=threads)

    def __call__(self, b: np.ndarray, gen):
        import torch

        from .wide_net import _centre, augment

        x = torch.from_numpy(self.crops[b]).permute(0, 3, 1, 2).float()
        x = _centre(augment(x, gen), self.margin).contiguous().numpy()
        return torch.from_numpy(self.sface.run(x)[-1])


def fit(data, idx, epochs, *, vec_blocks, blocks_lr, evaluate=None, augmented=None, log=print):
    import torch

    from .network import BATCH, LR, SEED, one_cycle, predict, run_epochs

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    vec = np.concatenate([data[b] for b in vec_blocks], 1).astype(np.float32)
    mean, scale = vec[idx].mean(0), vec[idx].std(0) + 1e-6
    model = _model(vec.shape[1], mean, scale)
    groups = [
        {"params": list(model.blocks.parameters()), "lr": blocks_lr, "weight_decay": 0.0},
        {"params": list(model.branch.parameters()), "lr": LR},
    ]
    per_epoch = int(np.ceil(len(idx) / BATCH))
    opt, sched = one_cycle(groups, epochs * per_epoch, 0.15)
    x13 = data["x13"]
    gen = torch.Generator().manual_seed(SEED)

    def forward(b):
        x = augmented(b, gen) if augmented else torch.from_numpy(x13[b].astype(np.float32))
        return model(x, torch.from_numpy(vec[b]))

    held = lambda: predict(model, x13, vec, evaluate)  # noqa: E731
    history = run_epochs(model, data, idx, epochs, rng, forward, opt, sched, held, evaluate, log)
    return model, history


def main(argv: list[str] | None = None) -> int:
    from . import network
    from .network import EPOCHS, HOLDOUT, SEED, SHIPPED_BLOCKS, figures, predict, score

    ap = argparse.ArgumentParser(description="Fine-tune SFace's last blocks with the attribute branch")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--blocks-lr", type=float, default=2e-4, help="peak learning rate of the SFace blocks")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--report", type=Path, default=None, help="write the holdout figures per epoch here (JSON)")
    ap.add_argument("--augment", action="store_true", help="train on augmented crops (SFace runs per batch)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    splits, blocks = ("train", "train_extra"), SHIPPED_BLOCKS
    data = load(splits, blocks, log=log)
    n = len(data["race"])
    perm = np.random.default_rng(SEED).permutation(n)
    hold, fit_idx = np.sort(perm[: int(n * HOLDOUT)]), np.sort(perm[int(n * HOLDOUT) :])
    log(f"{n} faces: {len(fit_idx)} to fit, {len(hold)} held out")
    augmented = Augmented(data, args.threads, log=log) if args.augment else None
    model, history = fit(
        data,
        fit_idx,
        args.epochs,
        vec_blocks=blocks,
        blocks_lr=args.blocks_lr,
        evaluate=hold,
        augmented=augmented,
        log=log,
    )
    vec = np.concatenate([data[b] for b in blocks], 1).astype(np.float32)
    p = predict(model, data["x13"], vec, hold)
    holdout = {**figures(p, data, hold), "score": score(figures(p, data, hold))}
    shipped = dict(np.load(network.HOLDOUT_PROBS))
    if list(shipped["image"].astype(str)) == list(data["image"][hold].astype(str)):
        holdout["shipped_branch"] = figures({t: shipped[t] for t in network.TASKS}, data, hold)
        holdout["shipped_branch"]["score"] = score(holdout["shipped_branch"])
    np.savez(HOLDOUT_PROBS, image=data["image"][hold], **{t: p[t] for t in network.TASKS})  # for later fusion
    holdout["race_min_score"] = race_threshold(p["race"], data["race"][hold])
    log(f"holdout: {json.dumps(holdout)}")
    if args.report:
        args.report.write_text(json.dumps({"holdout": holdout, "history": history}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["extract"]:
        for sp in sys.argv[2:]:
            extract_split(sp, log=lambda m: print(m, flush=True))
    else:
        raise SystemExit(main())
