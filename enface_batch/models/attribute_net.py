"""The attribute network: gender, FairFace age bin and race from one small ONNX branch over the SFace trunk,
fused with a small CNN of its own on a wider crop.

The branch (enface_batch/data/attribute_net.onnx, trained by enface_batch/train/network.py on FairFace train +
train_extra, CC BY 4.0) reads SFace's conv_14 map and pooled blocks that models/heads.FaceFeatures computes
anyway, so the trunk runs once per face. Its metadata (the ONNX "enface_meta" property) names the pooled blocks
it reads, its classes and race's "unknown" threshold.

The wide-crop CNN (enface_batch/data/attribute_wide.onnx, train/wide_net.py) reads the face on the 64 px
models/align.wide_crop (hair, ears, neck: what the identity trunk's crop and training leave out); its
probabilities (face and mirror averaged) are averaged with the branch's, and race's threshold then comes from
its metadata (chosen on the fused holdout).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np

from .session import Model

NET_FILE = "attribute_net.onnx"
WIDE_FILE = "attribute_wide.onnx"
TASKS = ("gender", "age", "race")


def _shipped(name: str) -> bytes | None:
    res = resources.files("enface_batch.data").joinpath(name)
    return res.read_bytes() if res.is_file() else None


def shipped_net() -> bytes | None:
    return _shipped(NET_FILE)


def shipped_wide() -> bytes | None:
    return _shipped(WIDE_FILE)


def net_version() -> str | None:
    data = shipped_net()
    if data is None:
        return None
    wide = shipped_wide()
    tail = "" if wide is None else f"+wide_{hashlib.sha256(wide).hexdigest()[:10]}"
    return f"fairface_net_{hashlib.sha256(data).hexdigest()[:10]}{tail}"


def net_meta(data: bytes) -> dict:
    """The training metadata stored in the network's ONNX file (blocks read, classes, thresholds, holdout)."""
    import onnx  # here, not at import: see models/convert.py

    return json.loads({p.key: p.value for p in onnx.load_from_string(data).metadata_props}["enface_meta"])


class AttributeNet:
    """proba(feats) -> {"gender": [N, 2], "age": [N, 9], "race": [N, 7]} probabilities.

    With the wide-crop CNN (use_wide, default: when the package ships it) feats also needs "wide", the
    [N, 64, 64, 3] uint8 wide crops."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        threads: int | None = None,
        batch: int = 64,
        wide: str | Path | None = None,
        use_wide: bool | None = None,
    ) -> None:
        data = Path(path).read_bytes() if path else shipped_net()
        if data is None:
            raise FileNotFoundError(f"no {NET_FILE} in enface_batch/data: run python -m enface_batch.train.network")
        self.meta = net_meta(data)
        self.vec_blocks: list[str] = self.meta["vec_blocks"]
        self.race_min_score = float(self.meta["race_min_score"])
        self.combine = bool(self.meta.get("combine_with_linear_heads", False))  # average with the linear heads
        self.model = Model(data, threads=threads)
        self.batch = batch
        wide_data = Path(wide).read_bytes() if wide else (shipped_wide() if use_wide is not False else None)
        self.wide = self.wide_meta = None
        if wide_data is not None and use_wide is not False:
            self.wide_meta = net_meta(wide_data)
            self.wide = Model(wide_data, threads=threads)
            self.race_min_score = float(self.wide_meta["race_min_score"])  # chosen on the fused holdout
        self.blocks = ("s14", *self.vec_blocks, *(("wide",) if self.wide else ()))

    def _run(self, model: Model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values())))
        parts = [
            model.session.run(None, {k: v[i : i + self.batch] for k, v in feeds.items()})
            for i in range(0, n, self.batch)
        ]
        return {t: np.concatenate([p[j] for p in parts]) for j, t in enumerate(TASKS)}

    def proba(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vec = np.concatenate([feats[b] for b in self.vec_blocks], 1).astype(np.float32)
        p = self._run(self.model, {"s14": feats["s14"].astype(np.float32), "vec": vec})
        if self.wide is None:
            return p
        x = feats["wide"].transpose(0, 3, 1, 2).astype(np.float32)
        n = len(x)
        q = self._run(self.wide, {"wide": np.ascontiguousarray(np.concatenate([x, x[:, :, :, ::-1]]))})
        w = float(self.wide_meta["fusion_weight"])
        return {t: (1 - w) * p[t] + w * (q[t][:n] + q[t][n:]) / 2 for t in TASKS}
