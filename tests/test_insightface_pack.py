"""insightface packs (buffalo_l/_s, antelopev2) read from a directory, tested on tiny generated ONNX stand-ins.

The real weights cannot be fetched here, so each stand-in has the real file's input/output signature: the loader
must tell them apart by signature alone, and SCRFD decoding is checked against hand-computed boxes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from fakepack import HOT_BOX, HOT_KPS, HOT_SCORE, save, vi, write_pack
from onnx import helper, numpy_helper

from enface_batch import imaging
from enface_batch.analyze import Analyzer
from enface_batch.models import PackError, load_pack
from enface_batch.models.attributes import InsightfaceGenderAge
from enface_batch.models.detector import SCRFD
from enface_batch.models.embedder import ArcFaceONNX
from enface_batch.models.pack import load_insightface_pack

EXAMPLES = "fixtures/face_recognition_examples/examples"


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory) -> Path:
    return write_pack(tmp_path_factory.mktemp("packs") / "buffalo_t")


@pytest.fixture(scope="module")
def pack(pack_dir):
    return load_insightface_pack(pack_dir, det_kw={"max_side": 640, "threshold": 0.5}, threads=1)


def _expected_box(width: int, height: int, max_side: int = 640) -> np.ndarray:
    """HOT_BOX mapped back from the detector's fitted image to the input's pixels, and clipped to it."""
    f = min(1.0, max_side / max(width, height))
    back = width / round(width * f) if f < 1 else 1.0
    return (HOT_BOX * back).clip(0, [width, height, width, height])


def test_roles_come_from_signatures_not_file_names(pack, pack_dir, tmp_path):
    assert isinstance(pack.detector, SCRFD)
    assert isinstance(pack.embedder, ArcFaceONNX) and pack.embedder.dim == 512
    assert isinstance(pack.attributes, InsightfaceGenderAge) and pack.attributes.size == 96
    assert pack.features == {"gender", "age"}
    assert pack.models == {"detector": "det_10g.onnx", "embedder": "w600k_r50.onnx", "genderage": "genderage.onnx"}
    assert pack.version == (
        "insightface:buffalo_t:detector=det_10g.onnx,embedder=w600k_r50.onnx,genderage=genderage.onnx"
    )

    # Odd names, sorted so that the landmark models come first: the roles must not move.
    odd = tmp_path / "antelope_like"
    odd.mkdir()
    renames = {"1k3d68": "a", "2d106det": "b", "genderage": "c", "w600k_r50": "d", "det_10g": "e"}
    for src, dst in renames.items():
        shutil.copy(pack_dir / f"{src}.onnx", odd / f"{dst}.onnx")
    (odd / "README.txt").write_text("not a model")
    p2 = load_pack(str(odd), threads=1)
    assert (type(p2.detector), type(p2.embedder), type(p2.attributes)) == (SCRFD, ArcFaceONNX, InsightfaceGenderAge)
    assert p2.models == {"detector": "e.onnx", "embedder": "d.onnx", "genderage": "c.onnx"}
    assert p2.name == "insightface:antelope_like" and p2.features == {"gender", "age"}


def test_missing_recognition_model_and_bad_path_are_pack_errors(pack_dir, tmp_path):
    partial = tmp_path / "no_rec"
    partial.mkdir()
    for name in ("det_10g", "genderage", "2d106det"):
        shutil.copy(pack_dir / f"{name}.onnx", partial / f"{name}.onnx")
    with pytest.raises(PackError, match=r"no embedder model \(found \['detector', 'genderage', 'other'\]\)"):
        load_insightface_pack(partial)

    no_det = tmp_path / "rec_only"
    no_det.mkdir()
    shutil.copy(pack_dir / "w600k_r50.onnx", no_det / "w600k_r50.onnx")
    with pytest.raises(PackError, match="no detector model"):
        load_insightface_pack(no_det)

    # Recognition only, no genderage: loads, but offers no features.
    shutil.copy(pack_dir / "det_10g.onnx", no_det / "det_10g.onnx")
    assert load_insightface_pack(no_det, threads=1).features == frozenset()

    for bad in (tmp_path / "does_not_exist", pack_dir / "det_10g.onnx"):
        with pytest.raises(PackError, match="ENFACE_MODEL_PACK=.*neither 'embedded' nor a directory"):
            load_pack(str(bad))


def test_scrfd_decode_matches_hand_computed_anchors(pack):
    det = pack.detector
    h, w = 64, 96  # stride 8: 8x12 cells, 16: 4x6, 32: 2x3; two anchors each
    rng = np.random.default_rng(1)
    n = {s: (h // s) * (w // s) * 2 for s in (8, 16, 32)}
    scores = {s: rng.uniform(0, 0.4, (n[s], 1)).astype(np.float32) for s in n}
    boxes = {s: rng.uniform(0, 9, (n[s], 4)).astype(np.float32) for s in n}
    kps = {s: rng.uniform(-9, 9, (n[s], 10)).astype(np.float32) for s in n}
    # stride 16, row 2, column 4, anchor 0 -> index (2*6+4)*2 = 32; centre (64, 32)
    scores[16][32], boxes[16][32] = 0.9, [1, 2, 3, 4]
    kps[16][32] = [0.5, -0.5, 1, 0, 0, 0.25, -1, 1, 2, 2]
    # stride 32, row 1, column 1, anchor 1 -> index (1*3+1)*2+1 = 9; centre (32, 32)
    scores[32][9], boxes[32][9], kps[32][9] = 0.7, [0.5, 0.5, 0.25, 1], np.arange(10) / 10

    def decode():  # outputs in the file order: scores, then boxes, then keypoints, each for strides 8/16/32
        return det.decode([d[s] for d in (scores, boxes, kps) for s in (8, 16, 32)], h, w)

    out = decode()
    np.testing.assert_allclose(out.scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(out.boxes, [[48, 0, 112, 96], [16, 16, 40, 64]])
    np.testing.assert_allclose(
        out.kps,
        [
            [[72, 24], [80, 32], [64, 36], [48, 48], [96, 64]],
            [[32, 35.2], [38.4, 41.6], [44.8, 48], [51.2, 54.4], [57.6, 60.8]],
        ],
        rtol=1e-6,
    )
    scores[16][32] = scores[32][9] = 0.49  # under the threshold: nothing
    assert len(decode()) == 0


def test_inputs_and_outputs_are_converted_as_insightface_does(pack, pack_dir, tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    np.testing.assert_allclose(pack.detector.preprocess(rgb)[0], (rgb.transpose(2, 0, 1) - 127.5) / 128, atol=1e-6)

    # The recognition stand-in is linear: replay it in numpy on (x - 127.5) / 127.5, RGB, NCHW.
    crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(pack_dir / "w600k_r50.onnx")).graph.initializer}
    x = ((crops.astype(np.float64) - 127.5) / 127.5).transpose(0, 3, 1, 2).reshape(3, 3, 14, 8, 14, 8)
    want = x.mean((3, 5)).reshape(3, -1) @ w["W"] + w["B"]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(pack.embedder.embed(crops), want, atol=1e-5)
    assert pack.embedder.embed(crops[:0]).shape == (0, 512)

    # A genderage stand-in that returns the crop's mean R, G, B: [female logit, male logit, age / 100].
    mean = helper.make_node("ReduceMean", ["data"], ["fc1"], axes=[2, 3], keepdims=0)
    ga = InsightfaceGenderAge(
        save(tmp_path / "ga.onnx", [mean], [vi("data", ["None", 3, 96, 96])], [vi("fc1", ["None", 3])], {}),
        threads=1,
    )
    img = np.zeros((300, 400, 3), np.uint8)
    img[30:180, 20:170] = (10, 200, 50)  # 150 px square = 1.5 x the 100 px box below; black elsewhere
    img[100:280, 200:380] = (200, 10, 30)  # 180 px = 1.5 x the 120 px box
    boxes = np.float32([[45, 55, 145, 155], [230, 130, 350, 250]])
    got = ga.predict(img, np.zeros((2, 5, 2), np.float32), boxes)
    assert [g["gender"] for g in got] == ["male", "female"]
    np.testing.assert_allclose([g["age"] for g in got], [5000, 3000], rtol=1e-4)
    np.testing.assert_allclose([g["gender_score"] for g in got], [1, 1], rtol=1e-6)
    assert ga.predict(img, np.zeros((0, 5, 2)), np.zeros((0, 4))) == []


@pytest.mark.parametrize(("width", "height"), [(300, 200), (640, 480), (1280, 960), (1000, 700)])
def test_scrfd_detect_maps_back_to_input_pixels(pack, width, height):
    rgb = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    det = pack.detector.detect(rgb)
    assert len(det) == 1, det.scores
    f = min(1.0, 640 / max(width, height))
    back = width / round(width * f) if f < 1 else 1.0
    np.testing.assert_allclose(det.scores, [HOT_SCORE], rtol=1e-5)
    np.testing.assert_allclose(det.boxes[0], _expected_box(width, height), rtol=1e-5)
    np.testing.assert_allclose(det.kps[0], HOT_KPS * back, rtol=1e-5)
    if width == 1280:  # fitted to 640x480: everything doubles
        np.testing.assert_allclose(det.boxes[0], [224, 64, 416, 352], rtol=1e-6)
        np.testing.assert_allclose(det.kps[0, 0], [280, 160], rtol=1e-6)


def test_analyzer_runs_an_insightface_pack_end_to_end(pack, test_data):
    root = test_data / EXAMPLES
    names = ["obama.jpg", "two_people.jpg", "obama-240p.jpg", "alex-lacamoire.png"]
    results = list(Analyzer(pack).analyze_uris([str(root / n) for n in names], features=["gender", "age"], multi=True))
    assert [Path(r.uri).name for r in results] == names
    assert pack.version.startswith("insightface:")
    for r in results:
        assert r.status == "faces" and len(r.faces) == 1, (r.uri, r.error)
        face = r.faces[0]
        assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(face.embedding)) - 1) < 1e-5
        assert face.features.keys() == {"gender", "gender_score", "age"}
        assert face.features["gender"] in ("female", "male") and 0.5 <= face.features["gender_score"] <= 1
        assert np.isfinite(face.features["age"])
        assert face.det_score == pytest.approx(HOT_SCORE, rel=1e-5)
        np.testing.assert_allclose(face.bbox, _expected_box(r.width, r.height), atol=0.06)
    embs = np.stack([r.faces[0].embedding for r in results])
    assert not np.allclose(embs[0], embs[1]), "different photos, different crops, different embeddings"


def test_genderage_sees_the_face_on_reduced_decodes(pack, test_data):
    uri = str(test_data / EXAMPLES / "obama-1080p.jpg")
    img = imaging.load(uri, max_side=320)
    assert img.scale > 1  # JPEG reduced in libjpeg: the case under test
    det = pack.detector.detect(img.rgb)
    want = pack.attributes.predict(img.rgb, det.kps, det.boxes)[0]
    (res,) = Analyzer(pack, decode_max_side=320).analyze_uris([uri], features=["age"])
    assert res.faces[0].features["age"] == pytest.approx(want["age"], abs=1e-3)
