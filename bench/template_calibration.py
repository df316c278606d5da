"""Does a person's template keep the false-match rates of the face-pair calibration? (ops/identity.py)

    python bench/template_calibration.py            # lfw_dev embeddings (cached by bench/lfw_embed.py)

For templates of n = 1..8 faces of one lfw_dev identity (every identity with at least n photos, 3 random
draws), every face of every other identity is scored against the template, three ways: the cosine to the
normalised mean (`cos`), and the project's template score `cos * sqrt(|m|)` (`adj`). Printed: the similarity
at which the stranger scores reach FMR 1e-2, 1e-3 and 1e-4, to compare with one face (n = 1), which is what
the calibration's 80 / 85 / 90 were fitted to. And the share of held-out same-person faces accepted at 90.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from lfw_embed import lfw_embeddings

from enface_batch.scoring import DEFAULT_EMBEDDER, calibration_for


def main() -> None:
    _, emb, _ = lfw_embeddings()
    items = [(p, e) for p, e in emb.items() if e is not None]
    names = np.array([Path(p).parent.name for p, _ in items])
    e = np.stack([v for _, v in items]).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    by: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(names):
        by[n].append(i)
    at90 = calibration_for(DEFAULT_EMBEDDER).similarity_for(90)
    print(
        "| faces in template | identities | cos at FMR 1e-2 / 1e-3 / 1e-4 | cos*sqrt(|m|) at 1e-2 / 1e-3 / 1e-4 "
        "| FMR at 90 (adj) | same person accepted at 90 (adj) |"
    )
    print("|---|---|---|---|---|---|")
    for n in (1, 2, 3, 4, 6, 8):
        cos, adj, gen = [], [], []
        people = [p for p, ix in by.items() if len(ix) >= n]
        for rep in range(1 if n == 1 else 3):
            rng = np.random.default_rng(rep)
            for p in people:
                ix = rng.permutation(by[p])
                m = e[ix[:n]].mean(0)
                norm = float(np.linalg.norm(m))
                c = e[names != p] @ (m / norm)
                cos.append(c)
                adj.append(c * np.sqrt(norm))
                if len(ix) > n:
                    gen.append(float(e[ix[n]] @ (m / norm)) * np.sqrt(norm))
        cos, adj = np.concatenate(cos), np.concatenate(adj)
        q = lambda x: " / ".join(f"{np.quantile(x, 1 - f):.3f}" for f in (1e-2, 1e-3, 1e-4))  # noqa: E731
        acc = f"{np.mean(np.array(gen) >= at90):.3f}" if gen else "-"
        print(f"| {n} | {len(people)} | {q(cos)} | {q(adj)} | {np.mean(adj >= at90):.1e} | {acc} |")


if __name__ == "__main__":
    main()
