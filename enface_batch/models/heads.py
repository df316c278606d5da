"""Gender, age and race from small linear heads trained by the project on FairFace (CC BY 4.0).

The heads read features that registry models already compute, so they add no network of their own:
  * SFace (the embedder's model file) on the ArcFace 112 px crop: its 128-d embedding and its last three
    feature maps (conv_12, conv_13, conv_14), average-pooled;
  * Cydral age-v1 (dlib-models, CC0) on the dlib 64 px chip: its 81 age probabilities and 256-d pooled features;
each averaged over the face and its mirror image. Three multinomial logistic regressions (race 7 classes,
gender 2, FairFace's 9 age bins) are fitted on fairface/train by enface_batch/train/attributes.py; their
weights (65 KB, enface_batch/data/attribute_heads.npz) ship with the package. Model card:
docs/model_card_attributes.md.

Race is an estimate: FairFace's seven labels are annotators' perceptions, and the measured per-class recall
(model card) ranges from 50 % to 87 %. Below the heads' race_min_score (0.38) the answer is "unknown".
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np

from .align import arcface_crop, chip_crop, wide_crop
from .attribute_net import AttributeNet, net_meta, net_version, shipped_net
from .attributes import AGE_BINS, AGE_EDGES, RACES, Attributes, softmax
from .session import Model

HEADS_FILE = "attribute_heads.npz"


def _with_outputs(path: str | Path, names: list[str]) -> bytes:
    """The ONNX graph with extra intermediate tensors exposed as outputs (no extra compute)."""
    import onnx  # here, not at import: see models/convert.py
    from onnx import helper

    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    return m.SerializeToString()


class FaceFeatures:
    """The features the heads read, per face, each [N, d] float32, averaged over the face and its mirror image:
    "emb" (SFace embedding), "c14" / "m13" / "m12" (SFace's last three feature maps, average-pooled), "agep" and
    "agef" (Cydral age probabilities and pooled features), and "s14" (SFace's conv_14 map itself, [N, 1024, 7, 7],
    the mirror's map flipped back before averaging: what the attribute network reads). Only the blocks asked for
    are computed. "genp" / "genf" / "genh": Cydral gender-v1's probabilities, its last conv map average-pooled and
    its 16-unit hidden layer (32 px dlib chip, more hair and head outline than SFace's crop), when a gender-v1
    file is given. "wide": the 64 px wide aligned crops themselves ([N, 64, 64, 3] uint8, face view only)."""

    SFACE_MAPS = {"c14": "conv_14_relu", "m13": "conv_13_relu", "m12": "conv_12_relu"}
    SPATIAL = {"s14": "conv_14_relu"}
    AGE_POOL = "layer_2_global_average_pool"
    GENDER_OUTS = {"genf": "layer_6_averagepool", "genh": "layer_3_relu"}  # gender-v1: last map, 16-unit hidden
    CYDRAL_MEAN = np.array([122.782, 117.001, 104.298], np.float32)
    ALL = ("emb", "c14", "m13", "m12", "agep", "agef")

    def __init__(
        self,
        sface: str | Path,
        age: str | Path,
        *,
        blocks: tuple[str, ...] = ALL,
        threads: int | None = None,
        batch: int = 16,
        flip: bool = True,
        gender: str | Path | None = None,
    ) -> None:
        self.blocks = tuple(blocks)
        self.flip = flip
        self.spatial = [k for k in self.SPATIAL if k in self.blocks]
        taken = {self.SPATIAL[k] for k in self.spatial}  # c14 is then pooled from s14, not exposed twice
        self.maps = [k for k in self.SFACE_MAPS if k in self.blocks and self.SFACE_MAPS[k] not in taken]
        outs = [self.SFACE_MAPS[k] for k in self.maps] + [self.SPATIAL[k] for k in self.spatial]
        self.sface = Model(_with_outputs(sface, outs), threads=threads)
        self.age = None
        if {"agep", "agef"} & set(self.blocks):
            self.age = Model(_with_outputs(age, [self.AGE_POOL]), threads=threads)
        self.gender = None
        if {"genp", "genf", "genh"} & set(self.blocks):
            if gender is None:
                raise ValueError("the genp/genf/genh blocks need Cydral gender-v1 (cydral_gender_v1.onnx)")
            self.gender = Model(_with_outputs(gender, list(self.GENDER_OUTS.values())), threads=threads)
        self.batch = batch

    def _run(self, model: Model, x: np.ndarray, keep: int = 0) -> list[np.ndarray]:
        """Outputs over batches; 4-d maps are average-pooled except the last `keep` outputs."""
        parts = []
        for i in range(0, len(x), self.batch):
            # pool the feature maps per chunk so a crowd photo never holds all of them at once
            outs = model.run(np.ascontiguousarray(x[i : i + self.batch]))
            cut = len(outs) - keep
            parts.append([o if o.ndim == 2 or j >= cut else o.mean((2, 3)) for j, o in enumerate(outs)])
        return [np.concatenate(p) for p in zip(*parts, strict=True)]

    def extract(self, rgb: np.ndarray, kps: np.ndarray) -> dict[str, np.ndarray]:
        n = len(kps)
        views = (lambda c: np.concatenate([c, c[:, :, ::-1]])) if self.flip else (lambda c: c)  # noqa: E731
        mean = lambda a: (((a[:n] + a[n:]) / 2) if self.flip else a).reshape(n, -1).astype(np.float32)  # noqa: E731
        arc = views(np.stack([arcface_crop(rgb, k) for k in kps])).astype(np.float32).transpose(0, 3, 1, 2)
        emb, *maps = self._run(self.sface, arc, keep=len(self.spatial))
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        out = {"emb": mean(emb), "_embedding": emb[:n].astype(np.float32)}
        pooled, spatial = maps[: len(self.maps)], maps[len(self.maps) :]
        out.update({k: mean(m) for k, m in zip(self.maps, pooled, strict=True)})
        for k, m in zip(self.spatial, spatial, strict=True):
            # the mirror's map is flipped back so both views' cells describe the same part of the face
            out[k] = (((m[:n] + m[n:, :, :, ::-1]) / 2) if self.flip else m).astype(np.float32)
            if k == "s14" and "c14" in self.blocks:
                out["c14"] = out[k].mean((2, 3))
        if self.age is not None:
            chip = views(np.stack([chip_crop(rgb, k, 64) for k in kps])).astype(np.float32)
            agep, agef = self._run(self.age, ((chip - self.CYDRAL_MEAN) / 256.0).transpose(0, 3, 1, 2))
            out.update(agep=mean(agep), agef=mean(agef))
        if "wide" in self.blocks:  # the wide-crop CNN's input, uint8; that network runs the mirror itself
            out["wide"] = np.stack([wide_crop(rgb, k) for k in kps])
        if self.gender is not None:
            chip = views(np.stack([chip_crop(rgb, k, 32) for k in kps])).astype(np.float32)
            genp, genf, genh = self._run(self.gender, ((chip - self.CYDRAL_MEAN) / 256.0).transpose(0, 3, 1, 2))
            out.update(genp=mean(genp), genf=mean(genf), genh=mean(genh))
        return {k: v for k, v in out.items() if k in self.blocks or k == "_embedding"}


class Heads:
    """Linear heads over concatenated feature blocks, weights folded with the standardisation: p = softmax(xW + b)."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            with resources.as_file(resources.files("enface_batch.data").joinpath(HEADS_FILE)) as p:
                z = np.load(p, allow_pickle=False)
                self._load(z)
        else:
            self._load(np.load(path, allow_pickle=False))

    def _load(self, z) -> None:
        self.meta = json.loads(str(z["meta"]))
        self.blocks: dict[str, list[str]] = self.meta["blocks"]
        self.w = {k: z[f"{k}_w"].astype(np.float32) for k in self.blocks}
        self.b = {k: z[f"{k}_b"].astype(np.float32) for k in self.blocks}
        self.race_min_score = float(self.meta["race_min_score"])

    def proba(self, task: str, feats: dict[str, np.ndarray]) -> np.ndarray:
        x = np.concatenate([feats[b] for b in self.blocks[task]], 1)
        return softmax(x @ self.w[task] + self.b[task])


def heads_version() -> str:
    """The model stamp of the shipped attribute model: the network's (or else the linear heads') content hash."""
    net = net_version()
    if net is not None:
        reads_gender = {"genp", "genf", "genh"} & set(net_meta(shipped_net())["vec_blocks"])
        return f"{net}+cydral_age_v1" + ("+cydral_gender_v1" if reads_gender else "")
    res = resources.files("enface_batch.data").joinpath(HEADS_FILE)
    if not res.is_file():  # only while bootstrapping: enface_batch.train.attributes writes it
        return "fairface_heads_missing"
    data = res.read_bytes()
    return f"fairface_heads_{hashlib.sha256(data).hexdigest()[:10]}+cydral_age_v1"


def age_years(bin_index: np.ndarray, cydral_years: np.ndarray) -> np.ndarray:
    """Years consistent with the chosen bin: Cydral's estimate, moved into the bin when it falls outside.

    The upper end stays 0.5 below the next bin's edge so that rounding to 0.1 never crosses into it."""
    lo = np.asarray(AGE_EDGES, np.float32)[bin_index]
    hi = np.asarray(AGE_EDGES, np.float32)[bin_index + 1] - 0.5
    return np.clip(cydral_years, lo, hi)


class FairFaceHeads(Attributes):
    """gender, age (years + FairFace bin) and race (7 FairFace classes or "unknown"): from the attribute network
    (models/attribute_net.py) when the package ships it, else (or with use_net=False) from the linear heads."""

    features = frozenset({"gender", "age", "race"})

    def __init__(
        self,
        sface: str | Path,
        age_model: str | Path,
        manifest: str | Path,
        *,
        heads: str | Path | None = None,
        net: str | Path | None = None,
        use_net: bool | None = None,
        threads: int | None = None,
        share_embedding: bool = False,
        gender_model: str | Path | None = None,
        use_wide: bool | None = None,
    ) -> None:
        # share_embedding: the pack's embedder is this same SFace file on the same ArcFace crop, so the face view's
        # embedding computed here is handed to the analyser (key "_embedding") instead of being computed twice.
        self.share_embedding = share_embedding
        self._files, self._threads = (sface, age_model), threads
        self._gender_model = gender_model  # Cydral gender-v1, read only by a network trained on its block
        self._extractor: FaceFeatures | None = None
        self._heads_path, self._heads = heads, None
        self.use_net = (net is not None or shipped_net() is not None) if use_net is None else use_net
        self._net_path, self._net = net, None
        self._use_wide = use_wide  # the wide-crop CNN fused with the network (default: when the package ships it)
        info = json.loads(Path(manifest).read_text())
        self.age_weights = np.asarray(info["models"]["age"]["age_weights"], np.float32)

    @property
    def heads(self) -> Heads:
        if self._heads is None:
            self._heads = Heads(self._heads_path)
        return self._heads

    @property
    def net(self) -> AttributeNet:
        if self._net is None:
            self._net = AttributeNet(self._net_path, threads=self._threads, use_wide=self._use_wide)
        return self._net

    def proba(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lin = lambda: {t: self.heads.proba(t, feats) for t in ("gender", "age", "race")}  # noqa: E731
        if not self.use_net:
            return lin()
        p = self.net.proba(feats)
        if self.net.combine:  # averaged with the linear heads: training kept it when it scored better held out
            p = {t: (v + w) / 2 for (t, v), w in zip(p.items(), lin().values(), strict=True)}
        return p

    @property
    def race_min_score(self) -> float:
        return self.net.race_min_score if self.use_net else self.heads.race_min_score

    @property
    def extractor(self) -> FaceFeatures:
        # Loaded on first use: a pack that is never asked for features pays nothing for a second SFace session.
        if self._extractor is None:
            if self.use_net:
                need, flip = set(self.net.blocks) | {"agep"}, True  # the network was trained on face + mirror
                if self.net.combine:
                    need |= {b for blocks in self.heads.blocks.values() for b in blocks}
            else:
                need = {b for blocks in self.heads.blocks.values() for b in blocks} | {"agep"}
                flip = bool(self.heads.meta.get("flip", True))  # trained on face + mirror means
            self._extractor = FaceFeatures(
                *self._files, blocks=tuple(need), flip=flip, threads=self._threads, gender=self._gender_model
            )
        return self._extractor

    def predict(self, rgb: np.ndarray, kps: np.ndarray, boxes: np.ndarray) -> list[dict]:
        if len(kps) == 0:
            return []
        f = self.extractor.extract(rgb, kps)
        probs = self.proba(f)
        pg, pa, pr = probs["gender"], probs["age"], probs["race"]  # gender: [female, male]
        bins = pa.argmax(1)
        years = age_years(bins, f["agep"] @ self.age_weights)
        out = []
        for i, (g, a, ab, y, r) in enumerate(zip(pg, pa, bins, years, pr, strict=True)):
            gi, ri = int(np.argmax(g)), int(np.argmax(r))
            out.append(
                {
                    **({"_embedding": f["_embedding"][i]} if self.share_embedding else {}),
                    "gender": ("female", "male")[gi],
                    "gender_score": float(g[gi]),
                    "age": round(float(y), 1),
                    "age_bin": AGE_BINS[int(ab)],
                    "age_score": round(float(a[ab]), 3),
                    "race": RACES[ri] if r[ri] >= self.race_min_score else "unknown",
                    "race_score": round(float(r[ri]), 3),
                    "race_scores": {c: round(float(p), 3) for c, p in zip(RACES, r, strict=True)},
                }
            )
        return out
