"""Face embedders: aligned 112x112 RGB crops in, L2-normalised float32 vectors out, in batches."""

from __future__ import annotations

import numpy as np

from .session import Model


class Embedder(Model):
    mean = 0.0
    std = 1.0

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def _fixed_batch(self) -> int | None:
        b = self.input_shape[0]
        return b if isinstance(b, int) and b > 0 else None

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """crops: [N, 112, 112, 3] uint8 RGB -> [N, D] float32, unit length."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = ((crops.astype(np.float32) - self.mean) / self.std).transpose(0, 3, 1, 2)
        fixed = self._fixed_batch()
        if fixed:
            outs = [self.run(np.ascontiguousarray(x[i : i + fixed]))[0] for i in range(0, len(x), fixed)]
            emb = np.concatenate(outs)
        else:
            emb = self.run(np.ascontiguousarray(x))[0]
        emb = emb.reshape(len(crops), -1).astype(np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


class SFace(Embedder):
    """OpenCV Zoo SFace: RGB 0..255 (normalisation is inside the graph), 128-d."""


class ArcFaceONNX(Embedder):
    """insightface w600k_* / glintr100: RGB, (x - 127.5) / 127.5, 512-d."""

    mean = 127.5
    std = 127.5
