"""Model packs: which detector, embedder and attribute models run, and where their files come from.

"embedded" is built only from registry packages (see fetch.py). An insightface pack (buffalo_l, buffalo_s,
antelopev2, ...) is read from a local directory: its files say what they are, as in insightface's model_zoo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..settings import get_settings
from .attributes import Attributes, InsightfaceGenderAge
from .detector import SCRFD, Detector, RefinedDetector, RetinaFace, YuNet
from .embedder import ArcFaceONNX, Embedder, SFace
from .fetch import ensure_files
from .heads import FairFaceHeads, heads_version
from .multiview import MultiViewDetector, View

# Candidates measured for the embedded pack (see the README's model table); the first is the default.
EMBEDDED_DETECTORS = {
    "yunet+retinaface": (YuNet, "yunet_2023mar_int8bq.onnx"),
    "yunet": (YuNet, "yunet_2023mar_int8bq.onnx"),
    "yunet_fp32": (YuNet, "yunet_2023mar.onnx"),
    "retinaface": (RetinaFace, "retinaface_mnet025.onnx"),
}
EMBEDDED_EMBEDDERS = {"sface": (SFace, "sface_2021dec.onnx")}
# Gender, age and race: the project's FairFace heads over SFace and Cydral-age features (models/heads.py).
HEADS_FILES = ("sface_2021dec.onnx", "cydral_age_v1.onnx", "cydral_manifest.json")
GENDER_FILE = "cydral_gender_v1.onnx"  # same registry package as age-v1; read by the attribute network


class PackError(RuntimeError):
    pass


@dataclass
class ModelPack:
    name: str
    detector: Detector | RefinedDetector | MultiViewDetector
    embedder: Embedder
    attributes: Attributes | None
    models: dict[str, str] = field(default_factory=dict)  # role -> model file, stamped on every result

    @property
    def features(self) -> frozenset[str]:
        return self.attributes.features if self.attributes else frozenset()

    @property
    def version(self) -> str:
        return f"{self.name}:" + ",".join(f"{k}={v}" for k, v in sorted(self.models.items()))


def load_pack(
    spec: str | None = None, *, detector: str = "yunet+retinaface", embedder: str = "sface", threads: int | None = None
) -> ModelPack:
    s = get_settings()
    spec = spec or s.model_pack
    det_kw = {"max_side": s.det_max_side, "threshold": s.det_threshold, "threads": threads}
    if spec == "embedded":
        det_cls, det_file = EMBEDDED_DETECTORS[detector]
        emb_cls, emb_file = EMBEDDED_EMBEDDERS[embedder]
        refine = detector.endswith("+retinaface")
        refiner_file = EMBEDDED_DETECTORS["retinaface"][1]
        thorough = s.det_mode == "thorough"
        paths = ensure_files(
            [det_file, emb_file, *HEADS_FILES, GENDER_FILE, *([refiner_file] if refine or thorough else [])]
        )
        det = det_cls(str(paths[det_file]), **det_kw)
        if thorough:
            det = thorough_detector(det, RetinaFace(str(paths[refiner_file]), **det_kw))
        if refine:
            det = RefinedDetector(det, RetinaFace(str(paths[refiner_file]), **{**det_kw, "threshold": 0.3}))
        return ModelPack(
            name="embedded",
            detector=det,
            embedder=emb_cls(str(paths[emb_file]), threads=threads),
            attributes=FairFaceHeads(
                *(paths[f] for f in HEADS_FILES),
                threads=threads,
                share_embedding=emb_file == HEADS_FILES[0],
                gender_model=paths[GENDER_FILE],
            ),
            models={
                "detector": det_file + ("+" + refiner_file if refine else "") + (":thorough" if thorough else ""),
                "embedder": emb_file,
                "attributes": heads_version(),
            },
        )
    return load_insightface_pack(Path(spec), det_kw=det_kw, threads=threads)


def thorough_detector(primary: Detector, second: RetinaFace) -> MultiViewDetector:
    """ENFACE_DET_MODE=thorough: the primary detector on the image and on its mirror, plus RetinaFace on a copy
    padded by 10 % on every side, boxes fused. Chosen on CMU+MIT and the crowd photos' dev split
    (bench/detection_eval.py --explore, see the note in reports/accuracy): the mirror adds 1.4 points of CMU+MIT
    recall, padded RetinaFace (kept only at score >= 0.8, where it is precise) 0.6 more and border-cut faces.
    A padded YuNet added false detections only; a 1280 px pass adds small crowd faces (< 32 px) at twice the
    cost, so it is left out."""
    return MultiViewDetector(
        [View(primary), View(primary, flip=True), View(second, pad=0.1, min_score=0.8)], fuse_iou=0.4
    )


def _classify(path: Path) -> str:
    """Say what an insightface ONNX file is from its signature, as insightface's model_zoo does."""
    import onnx  # here, not at import: see models/convert.py

    try:
        m = onnx.load(str(path), load_external_data=False)
        inp = m.graph.input[0].type.tensor_type.shape.dim
        outs = m.graph.output
        if len(outs) >= 6:
            if len(outs) != 9:
                raise PackError(
                    f"{path.name}: a detector with {len(outs)} outputs; only SCRFD with 5 keypoints "
                    "(9 outputs: 3 strides x score, box, keypoints) is supported"
                )
            return "detector"
        if [d.dim_value for d in inp[2:4]] == [112, 112]:
            return "embedder"
        last = outs[0].type.tensor_type.shape.dim[-1].dim_value
    except PackError:
        raise
    except Exception as exc:  # protobuf DecodeError for non-ONNX files, IndexError for shapeless outputs
        raise PackError(f"{path} is not an ONNX model this loader understands: {exc}") from exc
    return "genderage" if last == 3 else "other"  # 2d106det, 1k3d68: landmark models we do not need


def load_insightface_pack(root: Path, *, det_kw: dict | None = None, threads: int | None = None) -> ModelPack:
    if not root.is_dir():
        raise PackError(
            f"ENFACE_MODEL_PACK={root} is neither 'embedded' nor a directory holding an insightface pack "
            "(det_*.onnx, w600k_*.onnx, genderage.onnx). Download the pack yourself and point the setting at it."
        )
    found: dict[str, Path] = {}
    for p in sorted(root.glob("*.onnx")):
        role = _classify(p)
        found.setdefault(role, p)
    missing = [r for r in ("detector", "embedder") if r not in found]
    if missing:
        raise PackError(f"insightface pack at {root} has no {' or '.join(missing)} model (found {sorted(found)})")
    det_kw = det_kw or {}
    return ModelPack(
        name=f"insightface:{root.name}",
        detector=SCRFD(str(found["detector"]), **det_kw),
        embedder=ArcFaceONNX(str(found["embedder"]), threads=threads),
        attributes=InsightfaceGenderAge(str(found["genderage"]), threads=threads) if "genderage" in found else None,
        models={k: v.name for k, v in found.items() if k != "other"},
    )
