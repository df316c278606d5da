"""A fake model pack: tiny generated ONNX files with the insightface signatures, and photos it recognises.

The one generator of stand-in models for the tests that need no real weights (tests/test_insightface_pack.py,
tests/test_units_*.py). The detector finds exactly one face in any photo up to 640 px: at stride 16, anchor 1
of row 6, column 10 (centre (160, 96)), box HOT_BOX, landmarks HOT_KPS (a level, frontal face: yaw 0, 96 px
square). The recognition stand-in is linear on the aligned crop, so `identity_photo` makes photos whose
embeddings say who is in them: the same identity gives cosine ~1, two identities ~0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HOT = (1, 6, 10)  # the generated detector fires at stride 16, anchor 1 of row 6, column 10: centre (160, 96)
HOT_SCORE = 0.99
DIST = np.float32([3, 4, 3, 5])  # left, top, right, bottom, in strides
KPS = np.float32([[-1.25, -1], [1.25, -1], [0, 0.5], [-1, 2], [1, 2]])  # offsets from the centre, in strides
HOT_BOX = np.float32([160 - 48, 96 - 64, 160 + 48, 96 + 80])  # = (112, 32, 208, 176)
HOT_KPS = np.float32([[140, 80], [180, 80], [160, 104], [144, 128], [176, 128]])
HOT_SQUARE = 96.0  # the shorter side of HOT_BOX: what the action rules compare with new_person_square_min


def vi(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def save(path: Path, nodes: list, inputs: list, outputs: list, inits: dict) -> Path:
    graph = helper.make_graph(
        nodes, path.stem, inputs, outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def dense(
    path: Path, inp: str, out: str, size: int, pool: int, dim: int, *, bias: float = 0.3, std: float = 1e-3
) -> Path:
    """[N,3,size,size] -> AveragePool -> Flatten -> Gemm -> [N,dim]: recognition, genderage and landmark stand-ins."""
    feat = 3 * (size // pool) ** 2
    w = np.random.default_rng(dim).normal(0, std, (feat, dim)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", [inp], ["pool"], kernel_shape=[pool, pool], strides=[pool, pool]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], [out]),
    ]
    b = np.full(dim, bias, np.float32)
    return save(path, nodes, [vi(inp, ["None", 3, size, size])], [vi(out, ["None", dim])], {"W": w, "B": b})


def scrfd(path: Path) -> Path:
    """SCRFD-10g signature: input.1 [1,3,?,?]; scores, boxes, keypoints for strides 8/16/32, numeric names."""
    names = {"score": ["448", "471", "494"], "bbox": ["451", "474", "497"], "kps": ["454", "477", "500"]}
    nodes, inits, outs = [], {}, {}
    rng = np.random.default_rng(0)
    for i, s in enumerate((8, 16, 32)):
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]))
        for kind, per, bias in (("score", 1, [-10.0]), ("bbox", 4, DIST), ("kps", 10, KPS.ravel())):
            ch, t = 2 * per, f"{kind}{s}"
            # Score weights are small but real (logits stay near -10); box/keypoint outputs are the biases alone.
            w = rng.normal(0, 0.05, (ch, 3, 1, 1)) if kind == "score" else np.zeros((ch, 3, 1, 1))
            inits[f"{t}_w"], inits[f"{t}_b"] = w.astype(np.float32), np.tile(np.float32(bias), 2)
            inits[f"{t}_shape"] = np.int64([-1, per])
            nodes.append(helper.make_node("Conv", [f"p{s}", f"{t}_w", f"{t}_b"], [f"{t}_c"]))
            src = f"{t}_c"
            if kind == "score" and s == 16:
                inits["hot_idx"], inits["hot_val"] = np.int64([[0, *HOT]]), np.float32([np.log(99.0)])
                nodes.append(helper.make_node("ScatterND", [src, "hot_idx", "hot_val"], ["hot"]))
                src = "hot"
            nodes.append(helper.make_node("Transpose", [src], [f"{t}_t"], perm=[0, 2, 3, 1]))
            name = names[kind][i]
            if kind == "score":
                nodes.append(helper.make_node("Reshape", [f"{t}_t", f"{t}_shape"], [f"{t}_r"]))
                nodes.append(helper.make_node("Sigmoid", [f"{t}_r"], [name]))
            else:
                nodes.append(helper.make_node("Reshape", [f"{t}_t", f"{t}_shape"], [name]))
            outs[name] = vi(name, [f"n{s}", per])
    order = [outs[n] for k in ("score", "bbox", "kps") for n in names[k]]
    return save(path, nodes, [vi("input.1", [1, 3, "?", "?"])], order, inits)


def write_pack(root: Path, *, identities: bool = False) -> Path:
    """A buffalo_l-like pack in `root`: detector, recognition, genderage and the two landmark models.

    identities=True gives the recognition stand-in no bias and unit-scale weights, so embeddings follow the
    crop's content (for `identity_photo`); the default keeps the small weights test_insightface_pack replays.
    """
    root.mkdir(parents=True, exist_ok=True)
    scrfd(root / "det_10g.onnx")
    rec = {"bias": 0.0, "std": 1.0} if identities else {}
    dense(root / "w600k_r50.onnx", "input.1", "683", 112, 8, 512, **rec)
    dense(root / "genderage.onnx", "data", "fc1", 96, 8, 3)
    dense(root / "2d106det.onnx", "data", "fc1", 192, 16, 212)
    dense(root / "1k3d68.onnx", "data", "fc1", 192, 16, 3309)
    return root


def identity_photo(path: Path, identity: int, photo: int = 0, size: tuple[int, int] = (320, 240)) -> Path:
    """A PNG of `identity` (coarse random blocks, so the 8 px pooled crop sees them) with light per-photo noise."""
    w, h = size
    blocks = np.random.default_rng(1000 + identity).integers(0, 256, (h // 16 + 1, w // 16 + 1, 3))
    img = np.kron(blocks, np.ones((16, 16, 1)))[:h, :w]
    noise = np.random.default_rng(10_000 * identity + photo + 1).normal(0, 6, img.shape) if photo else 0
    Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8)).save(path)
    return path
