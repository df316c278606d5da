"""Embed every lfw_dev image once per model pack and cache the result (shared by calibrate and accuracy)."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from enface_batch.analyze import Analyzer
from enface_batch.evaluation import central_face, lfw_pairs
from enface_batch.models import load_pack
from enface_batch.settings import get_settings


def lfw_embeddings(detector: str = "yunet+retinaface", embedder: str = "sface", pack: str | None = None):
    """Returns (pairs, {path: embedding or None}); images with no face fall back to None (counted a miss)."""
    root = Path(get_settings().test_data) / "lfw_dev"
    pairs = lfw_pairs(root)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs} | {str(p) for p in root.glob("images/*/*.jpg")})
    p = load_pack(pack, detector=detector, embedder=embedder)
    key = hashlib.sha1(f"{p.version}|{len(paths)}".encode()).hexdigest()[:12]
    cache = Path(get_settings().model_cache).parent / "bench" / f"lfw_{key}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        emb = {k: (v if v.size else None) for k, v in zip(z["paths"], z["emb"], strict=True)}
        emb = {str(k): (None if np.isnan(v).all() else v) for k, v in emb.items()}
        return pairs, emb, p
    t0 = time.time()
    an = Analyzer(p)
    emb = {}
    dim = p.embedder.dim
    for res in an.analyze_uris(paths):
        f = central_face(res)
        emb[res.uri] = f.embedding if f is not None else None
    print(f"embedded {len(paths)} lfw_dev images in {time.time() - t0:.1f}s with {p.version}", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    arr = np.stack([e if e is not None else np.full(dim, np.nan, np.float32) for e in emb.values()])
    np.savez(cache, paths=np.array(list(emb)), emb=arr)
    return pairs, emb, p
