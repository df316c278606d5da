"""The attribute network: gender, FairFace age bin and race from one small ONNX branch over the SFace trunk.

The branch (enface_batch/data/attribute_net.onnx, trained by enface_batch/train/network.py on FairFace train +
train_extra, CC BY 4.0) reads SFace's conv_14 map and pooled blocks that models/heads.FaceFeatures computes
anyway, so the trunk runs once per face. Its metadata (the ONNX "enface_meta" property) names the pooled blocks
it reads, its classes and race's "unknown" threshold.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import onnx

from .session import Model

NET_FILE = "attribute_net.onnx"


def shipped_net() -> bytes | None:
    res = resources.files("enface_batch.data").joinpath(NET_FILE)
    return res.read_bytes() if res.is_file() else None


def net_version() -> str | None:
    data = shipped_net()
    return None if data is None else f"fairface_net_{hashlib.sha256(data).hexdigest()[:10]}"


def net_meta(data: bytes) -> dict:
    """The training metadata stored in the network's ONNX file (blocks read, classes, thresholds, holdout)."""
    return json.loads({p.key: p.value for p in onnx.load_from_string(data).metadata_props}["enface_meta"])


class AttributeNet:
    """proba(feats) -> {"gender": [N, 2], "age": [N, 9], "race": [N, 7]} probabilities."""

    def __init__(self, path: str | Path | None = None, *, threads: int | None = None, batch: int = 64) -> None:
        data = Path(path).read_bytes() if path else shipped_net()
        if data is None:
            raise FileNotFoundError(f"no {NET_FILE} in enface_batch/data: run python -m enface_batch.train.network")
        self.meta = net_meta(data)
        self.vec_blocks: list[str] = self.meta["vec_blocks"]
        self.blocks = ("s14", *self.vec_blocks)
        self.race_min_score = float(self.meta["race_min_score"])
        self.combine = bool(self.meta.get("combine_with_linear_heads", False))  # average with the linear heads
        self.model = Model(data, threads=threads)
        self.batch = batch

    def proba(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vec = np.concatenate([feats[b] for b in self.vec_blocks], 1).astype(np.float32)
        s14 = feats["s14"].astype(np.float32)
        parts = [
            self.model.session.run(None, {"s14": s14[i : i + self.batch], "vec": vec[i : i + self.batch]})
            for i in range(0, len(vec), self.batch)
        ]
        return {t: np.concatenate([p[j] for p in parts]) for j, t in enumerate(("gender", "age", "race"))}
