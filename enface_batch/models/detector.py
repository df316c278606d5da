"""Face detectors: image in, boxes + scores + 5 landmarks out, in the input array's pixel coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .session import Model


@dataclass
class Detections:
    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # [N]
    kps: np.ndarray  # [N, 5, 2]

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx: np.ndarray) -> Detections:
        return Detections(self.boxes[idx], self.scores[idx], self.kps[idx])

    def scaled(self, factor: float) -> Detections:
        return Detections(self.boxes * factor, self.scores, self.kps * factor)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-scores)
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0, xx2 - xx1) * np.maximum(0, yy2 - yy1)
        ovr = inter / (area[i] + area[order[1:]] - inter + 1e-9)
        order = order[1:][ovr <= iou]
    return np.asarray(keep, dtype=np.int64)


def _fit(rgb: np.ndarray, max_side: int, multiple: int) -> tuple[np.ndarray, float]:
    """Scale the image so its longest side is at most max_side and pad it to a multiple of `multiple`.

    Returns the padded array and the factor that maps its pixels back to the input's pixels.
    """
    h, w = rgb.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    h2, w2 = rgb.shape[:2]
    ph, pw = -h2 % multiple, -w2 % multiple
    if ph or pw:
        rgb = cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
    return rgb, (w / w2 if f < 1.0 else 1.0)


class Detector(Model):
    """Base: fit the image to the network, run, decode, NMS, map back."""

    multiple = 32
    nms_iou = 0.4
    batchable = True  # outputs per image along axis 0, or along axis 1 of a [1, N*A, C] output (see _one_of)

    def __init__(self, model: bytes | str, *, max_side: int = 640, threshold: float = 0.6, **kw) -> None:
        super().__init__(model, **kw)
        self.max_side = max_side
        self.threshold = threshold

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, outputs: list[np.ndarray], height: int, width: int) -> Detections:
        raise NotImplementedError

    def detect(self, rgb: np.ndarray, *, max_side: int | None = None) -> Detections:
        fitted, back = _fit(rgb, max_side or self.max_side, self.multiple)
        h, w = fitted.shape[:2]
        return self._finish(self.decode(self.run(self.preprocess(fitted)), h, w), back, rgb)

    def detect_many(self, images: Sequence[np.ndarray], *, max_batch: int = 8) -> list[Detections]:
        """detect() of each image, with images that fit to the same size sharing one session run.

        Same results as one image at a time (nothing is padded beyond what detect() pads); fewer, larger runs
        keep a GPU busy, and on a CPU save the per-run overhead for archives of same-sized photos.
        """
        fitted = [_fit(rgb, self.max_side, self.multiple) for rgb in images]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, (f, _) in enumerate(fitted):
            by_size.setdefault(f.shape, []).append(i)
        out: list[Detections] = [Detections.empty()] * len(images)
        step = max_batch if self.batchable else 1
        for idx in by_size.values():
            for at in range(0, len(idx), step):
                group = idx[at : at + step]
                h, w = fitted[group[0]][0].shape[:2]
                outs = self.run(np.concatenate([self.preprocess(fitted[i][0]) for i in group]))
                for j, i in enumerate(group):
                    one = [_one_of(o, j, len(group)) for o in outs]
                    out[i] = self._finish(self.decode(one, h, w), fitted[i][1], images[i])
        return out

    def _finish(self, det: Detections, back: float, rgb: np.ndarray) -> Detections:
        if len(det):
            det = det.take(nms(det.boxes, det.scores, self.nms_iou))
            # Boxes may spill past the padding or the frame; clip to the real image.
            det = det.scaled(back)
            H, W = rgb.shape[:2]
            det.boxes[:, [0, 2]] = det.boxes[:, [0, 2]].clip(0, W)
            det.boxes[:, [1, 3]] = det.boxes[:, [1, 3]].clip(0, H)
        return det


def _one_of(output: np.ndarray, j: int, n: int) -> np.ndarray:
    """Image j's part of a batched output: [N, A, C] per image, or YuNet's [1, N*A, C] (its graph flattens)."""
    if n == 1:
        return output
    if output.shape[0] == n:
        return output[j : j + 1]
    per = output.shape[1] // n
    return output[:, j * per : (j + 1) * per]


class YuNet(Detector):
    """OpenCV Zoo YuNet 2023mar: BGR 0..255 in; per stride cls/obj/bbox/kps out, anchor-free."""

    strides = (8, 16, 32)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))[None].astype(np.float32)

    def decode(self, outputs: list[np.ndarray], height: int, width: int) -> Detections:
        out = dict(zip(self.output_names, outputs, strict=True))
        boxes, scores, kps = [], [], []
        for s in self.strides:
            cols, rows = width // s, height // s
            cls = out[f"cls_{s}"][0, :, 0].clip(0, 1)
            obj = out[f"obj_{s}"][0, :, 0].clip(0, 1)
            score = np.sqrt(cls * obj)
            idx = np.nonzero(score >= self.threshold)[0]
            if not idx.size:
                continue
            ax = (idx % cols).astype(np.float32)
            ay = (idx // cols).astype(np.float32)
            b = out[f"bbox_{s}"][0, idx]
            cx, cy = (ax + b[:, 0]) * s, (ay + b[:, 1]) * s
            w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
            boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1))
            k = out[f"kps_{s}"][0, idx].reshape(-1, 5, 2)
            kps.append(np.stack([(k[..., 0] + ax[:, None]) * s, (k[..., 1] + ay[:, None]) * s], -1))
            scores.append(score[idx])
            assert rows * cols == cls.shape[0]
        if not scores:
            return Detections.empty()
        return Detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps))


class RetinaFace(Detector):
    """RetinaFace mobilenet0.25 (biubug6): BGR minus (104, 117, 123); anchors at strides 8/16/32."""

    strides = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))
    _anchor_cache: dict = {}

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        x = rgb[:, :, ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))[None]

    def _anchors(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key not in self._anchor_cache:
            parts = []
            for s, sizes in self.strides:
                ny, nx = -(-height // s), -(-width // s)
                yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
                cxy = np.stack([(xx.ravel() + 0.5) * s, (yy.ravel() + 0.5) * s], 1)
                for_each = [np.hstack([cxy, np.full((len(cxy), 2), sz, np.float32)]) for sz in sizes]
                parts.append(np.stack(for_each, 1).reshape(-1, 4))
            self._anchor_cache[key] = np.concatenate(parts).astype(np.float32)
        return self._anchor_cache[key]

    def decode(self, outputs: list[np.ndarray], height: int, width: int) -> Detections:
        out = dict(zip(self.output_names, outputs, strict=True))
        loc, conf, lmk = out["loc"][0], out["conf"][0][:, 1], out["landmarks"][0]
        idx = np.nonzero(conf >= self.threshold)[0]
        if not idx.size:
            return Detections.empty()
        a = self._anchors(height, width)[idx]
        loc, lmk = loc[idx], lmk[idx].reshape(-1, 5, 2)
        cxy = a[:, :2] + loc[:, :2] * 0.1 * a[:, 2:]
        wh = a[:, 2:] * np.exp(loc[:, 2:] * 0.2)
        boxes = np.hstack([cxy - wh / 2, cxy + wh / 2])
        kps = a[:, None, :2] + lmk * 0.1 * a[:, None, 2:]
        return Detections(boxes, conf[idx], kps)


class SCRFD(Detector):
    """insightface SCRFD (det_10g / det_500m / det_2.5g): RGB (x - 127.5) / 128; 2 anchors per cell.

    Outputs come as 9 tensors: scores for strides 8/16/32, then boxes, then landmarks (distances x stride).
    """

    batchable = False  # insightface's exports drop the batch axis ([A, C] outputs)

    strides = (8, 16, 32)
    num_anchors = 2

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        x = (rgb.astype(np.float32) - 127.5) / 128.0
        return np.ascontiguousarray(x.transpose(2, 0, 1))[None]

    def decode(self, outputs: list[np.ndarray], height: int, width: int) -> Detections:
        n = len(self.strides)
        boxes, scores, kps = [], [], []
        for i, s in enumerate(self.strides):
            sc = outputs[i].reshape(-1)
            bb = outputs[i + n].reshape(-1, 4) * s
            kp = outputs[i + 2 * n].reshape(-1, 10) * s
            rows, cols = height // s, width // s
            yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            centres = np.repeat(np.stack([xx.ravel(), yy.ravel()], 1) * s, self.num_anchors, 0).astype(np.float32)
            idx = np.nonzero(sc >= self.threshold)[0]
            if not idx.size:
                continue
            c, b, k = centres[idx], bb[idx], kp[idx].reshape(-1, 5, 2)
            boxes.append(np.hstack([c - b[:, :2], c + b[:, 2:]]))
            kps.append(c[:, None, :] + k)
            scores.append(sc[idx])
        if not scores:
            return Detections.empty()
        return Detections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps))


class RefinedDetector:
    """Find faces with one detector, then re-place their 5 landmarks with a second one run on face crops.

    YuNet finds more small faces than RetinaFace-mnet0.25 (CMU+MIT recall 93.7 % vs 89.0 % at 640 px), while
    RetinaFace's landmarks align better for the embedder (lfw_dev 99.50 % vs 99.17 %). The crops are small and
    batched, so the second opinion costs a few ms per face.
    """

    def __init__(self, primary: Detector, refiner: Detector, *, crop: int = 160, context: float = 1.8) -> None:
        self.primary, self.refiner = primary, refiner
        self.crop, self.context = crop, context
        self.chunk = 16
        self.threshold = primary.threshold

    @property
    def session(self):
        return self.primary.session

    def detect(self, rgb: np.ndarray) -> Detections:
        return self._refine([rgb], [self.primary.detect(rgb)])[0]

    def detect_many(self, images: Sequence[np.ndarray], *, max_batch: int = 8) -> list[Detections]:
        return self._refine(images, self.primary.detect_many(images, max_batch=max_batch))

    def refine(self, rgb: np.ndarray, det: Detections) -> Detections:
        """The primary detector's faces with their landmarks re-placed by the refiner where it agrees."""
        return self._refine([rgb], [det])[0]

    def _refine(self, images: Sequence[np.ndarray], dets: list[Detections]) -> list[Detections]:
        """Re-place each face's landmarks from the refiner, all faces of all images in shared runs."""
        mats, crops, owner = [], [], []
        for n, (rgb, det) in enumerate(zip(images, dets, strict=True)):
            for i, (x1, y1, x2, y2) in enumerate(det.boxes):
                side = max(x2 - x1, y2 - y1) * self.context
                f = self.crop / max(side, 1.0)
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                m = np.array([[f, 0, self.crop / 2 - f * cx], [0, f, self.crop / 2 - f * cy]], np.float32)
                crops.append(cv2.warpAffine(rgb, m, (self.crop, self.crop), borderMode=cv2.BORDER_CONSTANT))
                mats.append((f, cx - self.crop / 2 / f, cy - self.crop / 2 / f))
                owner.append((n, i))
        if not crops:
            return dets
        x = np.concatenate([self.refiner.preprocess(c) for c in crops])
        # Chunks keep onnxruntime's memory arena from growing to the size of a 150-face crowd photo.
        chunks = [self.refiner.run(x[i : i + self.chunk]) for i in range(0, len(x), self.chunk)]
        outs = [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
        kps = [det.kps.copy() for det in dets]
        for k, ((f, ox, oy), (n, i)) in enumerate(zip(mats, owner, strict=True)):
            sub = self.refiner.decode([o[k : k + 1] for o in outs], self.crop, self.crop)
            if not len(sub):
                continue
            boxes = sub.boxes / f + [ox, oy, ox, oy]
            best = int(np.argmax(_iou1(dets[n].boxes[i], boxes)))
            if _iou1(dets[n].boxes[i], boxes[best : best + 1])[0] >= 0.4:
                kps[n][i] = sub.kps[best] / f + [ox, oy]
        return [Detections(det.boxes, det.scores, k) for det, k in zip(dets, kps, strict=True)]


def _iou1(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area - inter + 1e-9)
