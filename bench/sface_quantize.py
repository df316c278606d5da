"""int8 SFace: onnxruntime static quantisation, calibrated on faces from the registry's own demo photos.

Kept in bench/, not in the package: no variant both kept lfw_dev >= 99.3 % and ran faster (see
bench/int8_embedder.py and the README's "Accuracy and speed"), so the scan ships fp32 SFace.

The calibration crops come only from fetched registry material (the insightface wheel's demo photos, see
fetch.DEMO_PHOTOS): every face the pack's detector finds, aligned as the scan aligns it, plus mirror images and
small landmark jitter (shift, scale, rotation) and brightness changes, so the activation ranges cover the
crops a scan produces. Never lfw_dev: that is where the result is checked (bench/int8_embedder.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from enface_batch.imaging import load
from enface_batch.models.align import arcface_crop

JITTERS = 12


def calibration_crops(detect, photos: Iterable[Path], *, seed: int = 0) -> np.ndarray:
    """[N, 112, 112, 3] uint8 RGB crops: each detected face, mirrored and jittered."""
    rng = np.random.default_rng(seed)
    crops = []
    for path in photos:
        img = load(str(path))
        det = detect(img.rgb)
        for kps in det.kps:
            centre = kps.mean(0)
            for j in range(JITTERS):
                if j == 0:
                    moved = kps
                else:
                    angle = np.deg2rad(rng.uniform(-8, 8))
                    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                    scale = rng.uniform(0.93, 1.07)
                    shift = rng.uniform(-2.5, 2.5, 2)
                    moved = (kps - centre) @ rot.T * scale + centre + shift
                crop = arcface_crop(img.rgb, moved.astype(np.float32))
                if j % 3 == 2:
                    crop = np.clip(crop.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
                crops += [crop, crop[:, ::-1]]
    if not crops:
        raise RuntimeError("no face found in the calibration photos")
    return np.ascontiguousarray(np.stack(crops))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a stack of crops, a few at a time."""

    def __init__(self, name: str, crops: np.ndarray, batch: int = 8) -> None:
        x = crops.astype(np.float32).transpose(0, 3, 1, 2)
        self._items = iter([{name: np.ascontiguousarray(x[i : i + batch])} for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def quantize_sface(
    src: Path, dst: Path, crops: np.ndarray, *, op_types: tuple[str, ...] | None = ("Conv", "Gemm"), fmt: str = "qdq"
) -> None:
    """Static quantisation (QDQ or QOperator), per-channel int8 weights, uint8 activations (x86's VNNI path)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="enface-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # BatchNormalization folds into the convolutions first, so each convolution gets one scale per channel.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        out = Path(tmp) / "q.onnx"
        quantize_static(
            str(pre),
            str(out),
            _Reader(name, crops),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=list(op_types) if op_types else None,
            calibrate_method=CalibrationMethod.MinMax,
        )
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp_dst = dst.with_suffix(dst.suffix + f".tmp{os.getpid()}")
        tmp_dst.write_bytes(out.read_bytes())
        os.replace(tmp_dst, dst)
