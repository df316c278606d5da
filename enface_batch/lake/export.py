"""Write `enface detect --out` results: a faces Parquet file and its images companion."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..analyze import ImageResult
from ..fsio import url_to_fs
from ..models.attributes import attribute_columns
from .schemas import FACES_EXPORT as FACES
from .schemas import IMAGES_EXPORT as IMAGES


def images_path(out: str) -> str:
    """F.parquet -> F.images.parquet: one row per image (status faces / no_faces / error, with reason)."""
    p = str(out)
    return (p[: -len(".parquet")] if p.endswith(".parquet") else p) + ".images.parquet"


class DetectWriter:
    """Streams results into two Parquet files in row groups, so memory stays flat on long runs."""

    def __init__(self, out: str, model: str, *, rows_per_group: int = 2048) -> None:
        self.out, self.model, self.rows_per_group = str(out), model, rows_per_group
        self._faces: list[dict] = []
        self._images: list[dict] = []
        fs, path = url_to_fs(self.out)
        if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._fw = pq.ParquetWriter(path, FACES, filesystem=fs)
        self._iw = pq.ParquetWriter(url_to_fs(images_path(self.out))[1], IMAGES, filesystem=fs)

    def add(self, res: ImageResult) -> None:
        self._images.append(
            {
                "image": res.uri,
                "status": res.status,
                "reason": res.reason,
                "message": res.error,
                "faces": len(res.faces),
                "width": res.width,
                "height": res.height,
                "size_bytes": res.size_bytes,
                "format": res.format,
                "spent_ms": res.spent_ms,
            }
        )
        for f in res.faces:
            self._faces.append(
                {
                    "image": res.uri,
                    "face_index": f.index,
                    "bbox": f.bbox,
                    "bbox_pro": f.bbox_pro,
                    "det_score": f.det_score,
                    "landmarks": f.landmarks,
                    "square": f.square,
                    "yaw": f.yaw,
                    "pitch": f.pitch,
                    "roll": f.roll,
                    "embedding": f.embedding.tolist(),
                    **attribute_columns(f.features),
                    "model": self.model,
                }
            )
        if len(self._faces) >= self.rows_per_group or len(self._images) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self._faces:
            self._fw.write_table(pa.Table.from_pylist(self._faces, FACES))
            self._faces = []
        if self._images:
            self._iw.write_table(pa.Table.from_pylist(self._images, IMAGES))
            self._images = []

    def close(self) -> None:
        self.flush()
        self._fw.close()
        self._iw.close()

    def __enter__(self) -> DetectWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
