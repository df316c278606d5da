"""Images in, faces out: decode, detect, align, embed and attributes, batched across images.

A pure function of its input and the model pack; nothing here reads or writes tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import imaging
from .imaging import jpeg_bytes
from .models import ModelPack
from .models.align import arcface_crop, face_crop, rotated_box
from .models.detector import Detections
from .models.pose import pose_from_landmarks
from .models.session import default_threads
from .settings import get_settings

FEATURES = ("gender", "age", "race")


class FeatureUnavailable(ValueError):
    pass


@dataclass
class Face:
    index: int  # order in the image: largest face first
    bbox: list[float]  # [x1, y1, x2, y2] in original-image pixels
    bbox_pro: list[list[float]]  # four [x, y] corners of the box turned with the face
    det_score: float
    landmarks: list[list[float]]  # 5 x [x, y], original-image pixels
    square: float  # shorter side of the face box, original pixels
    yaw: float
    pitch: float
    roll: float
    embedding: np.ndarray  # float32, unit length
    thumb: np.ndarray  # 112x112x3 uint8 RGB, the aligned crop the embedder saw
    crop: bytes | None = None  # JPEG of the face box with a margin, at most 224 px: a person's image
    thumb_jpeg: bytes | None = None  # JPEG of thumb, made by the worker (the single writer stores it)
    features: dict = field(default_factory=dict)  # e.g. {"gender": "male", "gender_score": .97, "age": 31.2}

    @property
    def area(self) -> float:
        return (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])


@dataclass
class ImageResult:
    uri: str
    faces: list[Face] = field(default_factory=list)
    width: int = 0
    height: int = 0
    size_bytes: int = 0
    format: str = ""
    sha256: str = ""  # content hash of the file ("" when it could not be read)
    error: str | None = None  # human-readable, names the file
    reason: str | None = None  # short code from imaging.ImageError
    spent_ms: float = 0.0

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return "faces" if self.faces else "no_faces"


def check_features(requested: Iterable[str], pack: ModelPack) -> list[str]:
    """Validate a feature_check list against what the pack can answer; what it cannot answer is refused, not guessed."""
    wanted = [f for f in dict.fromkeys(requested) if f]
    bad = [f for f in wanted if f not in FEATURES]
    if bad:
        raise FeatureUnavailable(f"unknown feature(s) {bad}: feature_check takes {list(FEATURES)}")
    missing = [f for f in wanted if f not in pack.features]
    if missing:
        raise FeatureUnavailable(f"feature(s) {missing} not available in this model pack ({pack.name})")
    return wanted


class Analyzer:
    def __init__(self, pack: ModelPack, *, batch_size: int | None = None, decode_max_side: int | None = None):
        s = get_settings()
        self.pack = pack
        self.batch_size = batch_size or s.batch_size
        self.decode_max_side = decode_max_side or s.decode_max_side
        self.det_batch = s.det_batch
        self._pool: ThreadPoolExecutor | None = None

    def _faces_of(self, img: imaging.DecodedImage, det: Detections, multi: bool) -> tuple[list[Face], list[tuple]]:
        if not len(det):
            return [], []
        area = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
        order = np.argsort(-area, kind="stable")
        if not multi:
            order = order[:1]
        # Attribute models crop from the decoded (possibly reduced) array, so they get its coordinates.
        faces, local = [], []
        for rank, i in enumerate(order):
            box, kps = det.boxes[i] * img.scale, det.kps[i] * img.scale
            yaw, pitch, roll = pose_from_landmarks(kps)
            faces.append(
                Face(
                    index=rank,
                    bbox=[round(float(v), 1) for v in box],
                    bbox_pro=[[round(x, 1), round(y, 1)] for x, y in rotated_box(box, kps)],
                    det_score=float(det.scores[i]),
                    landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in kps],
                    square=round(float(min(box[2] - box[0], box[3] - box[1])), 1),
                    yaw=round(yaw, 1),
                    pitch=round(pitch, 1),
                    roll=round(roll, 1),
                    embedding=np.zeros(0, np.float32),
                    thumb=(thumb := arcface_crop(img.rgb, det.kps[i])),
                    thumb_jpeg=jpeg_bytes(thumb),
                    # Encoded here, in the worker: a JPEG crosses process boundaries at a tenth of the pixels.
                    crop=jpeg_bytes(face_crop(img.rgb, det.boxes[i]), 85),
                )
            )
            local.append((det.kps[i], det.boxes[i]))
        return faces, local

    def analyze_images(
        self, images: list[imaging.DecodedImage], *, features: Iterable[str] = (), multi: bool = True
    ) -> list[ImageResult]:
        """Analyse already decoded images; faces of all images share embedder batches."""
        features = check_features(features, self.pack)
        results, pending = [], []
        t0 = time.perf_counter()
        dets = self.pack.detector.detect_many([img.rgb for img in images], max_batch=self.det_batch)
        det_ms = (time.perf_counter() - t0) * 1000 / max(1, len(images))
        for img, det in zip(images, dets, strict=True):
            t0 = time.perf_counter()
            faces, local = self._faces_of(img, det, multi)
            if faces and features:
                kps, boxes = (np.stack(x) for x in zip(*local, strict=True))
                preds = self.pack.attributes.predict(img.rgb, kps, boxes)
                for f, p in zip(faces, preds, strict=True):
                    if "_embedding" in p:  # the attribute model ran the pack's embedder on this face already
                        f.embedding = p["_embedding"]
                    f.features = {k: v for k, v in p.items() if k.split("_")[0] in features}
            res = ImageResult(
                img.uri,
                faces,
                img.width,
                img.height,
                img.size_bytes,
                img.format,
                sha256=img.sha256,
                spent_ms=det_ms + (time.perf_counter() - t0) * 1000,
            )
            results.append(res)
            pending.extend((res, f) for f in faces if not f.embedding.size)
        t0 = time.perf_counter()
        batches = [pending[i : i + self.batch_size] for i in range(0, len(pending), self.batch_size)]
        for batch, emb in zip(batches, self._embed_batches(batches), strict=True):
            for (_, f), e in zip(batch, emb, strict=True):
                f.embedding = e
        share = (time.perf_counter() - t0) * 1000 / max(1, len(pending))
        for res, _ in pending:
            res.spent_ms += share
        return results

    def _embed_batches(self, batches: list[list[tuple[ImageResult, Face]]]) -> Iterable[np.ndarray]:
        """Several embedder batches run side by side: a crowd photo's hundred faces would otherwise keep one
        core busy while the others wait (sessions use one thread each when workers share the cores)."""

        def embed(batch: list[tuple[ImageResult, Face]]) -> np.ndarray:
            return self.pack.embedder.embed(np.stack([f.thumb for _, f in batch]))

        if len(batches) < 2:
            return map(embed, batches)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="embed")
        return self._pool.map(embed, batches)

    def analyze_uris(
        self,
        uris: Iterable[str],
        *,
        features: Iterable[str] = (),
        multi: bool = True,
        images_per_batch: int | None = None,
        prefetch_threads: int = 2,
    ) -> Iterator[ImageResult]:
        """Decode ahead on threads while the models work; yield one result per URI, errors included, in order."""
        features = check_features(features, self.pack)
        images_per_batch = images_per_batch or max(8, self.det_batch)

        def load(uri: str) -> imaging.DecodedImage | ImageResult:
            t0 = time.perf_counter()
            try:
                return imaging.load(uri, max_side=self.decode_max_side)
            except imaging.ImageError as exc:
                return ImageResult(
                    uri,
                    sha256=exc.sha256,
                    error=str(exc),
                    reason=exc.reason,
                    spent_ms=(time.perf_counter() - t0) * 1000,
                )

        with ThreadPoolExecutor(max_workers=prefetch_threads, thread_name_prefix="decode") as pool:
            window: list = []
            for fut in _bounded_map(pool, load, uris, ahead=images_per_batch * 2):
                window.append(fut)
                if len(window) >= images_per_batch:
                    yield from self._flush(window, features, multi)
                    window = []
            yield from self._flush(window, features, multi)

    def _flush(self, window: list, features: list[str], multi: bool) -> Iterator[ImageResult]:
        decoded = [x for x in window if isinstance(x, imaging.DecodedImage)]
        done = iter(self.analyze_images(decoded, features=features, multi=multi))
        for x in window:
            yield next(done) if isinstance(x, imaging.DecodedImage) else x


def _bounded_map(pool: ThreadPoolExecutor, fn, items: Iterable, ahead: int) -> Iterator:
    """pool.map that keeps at most `ahead` items in flight, so a huge listing never fills memory."""
    queue = []
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > ahead:
            yield queue.pop(0).result()
    for fut in queue:
        yield fut.result()
