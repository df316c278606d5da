"""Model-side arithmetic without model files: NMS, head pose from five landmarks, softmax and the age bins."""

from __future__ import annotations

import numpy as np
import pytest

from enface_batch.models.attributes import AGE_BINS, AGE_EDGES, age_bin, softmax
from enface_batch.models.detector import nms
from enface_batch.models.heads import age_years
from enface_batch.models.pose import pose_from_landmarks


# ------------------------------------------------------------------------------------------------ nms
def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_face():
    boxes = np.float32(
        [
            [0, 0, 100, 100],  # 0: a face
            [5, 5, 105, 105],  # 1: the same face, a little lower score: IoU 0.82
            [200, 0, 300, 100],  # 2: another face
            [60, 0, 160, 100],  # 3: overlaps 0 by IoU 0.25 only
        ]
    )
    scores = np.float32([0.8, 0.9, 0.7, 0.6])
    keep = nms(boxes, scores, 0.4)
    assert keep.tolist() == [1, 2, 3]  # best first; 0 is box 1's duplicate
    assert keep.dtype == np.int64
    assert nms(boxes, scores, 0.2).tolist() == [1, 2]  # a stricter IoU drops the 0.25 overlap too


def test_nms_is_greedy_and_keeps_a_box_whose_overlap_equals_the_threshold():
    # 0 suppresses 1; 2 overlaps only 1 (which is gone), so it stays
    boxes = np.float32([[0, 0, 10, 10], [4, 0, 14, 10], [9, 0, 19, 10]])
    assert nms(boxes, np.float32([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]
    half = np.float32([[0, 0, 20, 10], [0, 0, 10, 10]])  # IoU exactly 0.5
    assert nms(half, np.float32([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(half, np.float32([0.9, 0.8]), 0.49).tolist() == [0]


def test_nms_of_nothing_is_nothing():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []


# ------------------------------------------------------------------------------------------------ pose
def _face(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, eye: float = 40.0) -> np.ndarray:
    """Five landmarks (eyes, nose, mouth corners) of a face turned by yaw/pitch, then rolled in the image."""
    nose_x = -0.55 * np.sin(np.radians(yaw)) * eye  # the nose tip sits 0.55 eye-distances deep
    nose_frac = 0.56 - 0.35 * np.sin(np.radians(pitch))  # between the eye line (0) and the mouth line (1)
    mouth = 1.2 * eye
    pts = np.float64(
        [[-eye / 2, 0], [eye / 2, 0], [nose_x, nose_frac * mouth], [-0.4 * eye, mouth], [0.4 * eye, mouth]]
    )
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    return pts @ np.array([[c, s], [-s, c]]) + [200, 150]


def test_a_frontal_level_face_has_no_pose():
    np.testing.assert_allclose(pose_from_landmarks(_face()), (0, 0, 0), atol=1e-6)


@pytest.mark.parametrize("yaw", [-60, -30, -10, 10, 25, 30, 45])
def test_yaw_round_trips_with_its_sign(yaw):
    got_yaw, got_pitch, got_roll = pose_from_landmarks(_face(yaw=yaw))
    assert got_yaw == pytest.approx(yaw, abs=0.01)
    assert got_pitch == pytest.approx(0, abs=0.01) and got_roll == pytest.approx(0, abs=0.01)


def test_yaw_is_positive_when_the_nose_points_to_image_left_and_survives_roll():
    kps = _face()
    kps[2, 0] -= 8  # nose toward image-left
    assert pose_from_landmarks(kps)[0] > 15
    for roll in (-25, 15, 40):
        y, _, r = pose_from_landmarks(_face(yaw=30, roll=roll))
        assert y == pytest.approx(30, abs=0.01) and r == pytest.approx(roll, abs=0.01)


def test_pitch_is_positive_looking_up():
    assert pose_from_landmarks(_face(pitch=20))[1] == pytest.approx(20, abs=0.01)
    assert pose_from_landmarks(_face(pitch=-20))[1] == pytest.approx(-20, abs=0.01)


def test_roll_is_positive_when_the_eye_line_slopes_down_to_image_right():
    assert pose_from_landmarks(_face(roll=10))[2] == pytest.approx(10, abs=1e-6)


def test_degenerate_landmarks_give_zero_not_nan():
    assert pose_from_landmarks(np.zeros((5, 2))) == (0.0, 0.0, 0.0)
    y, p, r = pose_from_landmarks(np.float32([[0, 0], [10, 0], [5, 0], [0, 0], [10, 0]]))  # mouth on the eye line
    assert np.isfinite([y, p, r]).all() and p == 0.0


# ------------------------------------------------------------------------------------------------ softmax, age
def test_softmax_rows_are_probabilities_even_for_huge_logits():
    z = np.float32([[1000, 1000, 0], [-1, 0, 1], [5, 5, 5]])
    p = softmax(z)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(p[2], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(softmax(z + 7), p, rtol=1e-5)  # shift-invariant
    assert p[1].argmax() == 2


@pytest.mark.parametrize(
    ("age", "label"),
    [(0, "0-2"), (2.99, "0-2"), (3, "3-9"), (19.9, "10-19"), (20, "20-29"), (69.9, "60-69"), (70, "more than 70")],
)
def test_age_bins_follow_fairface(age, label):
    assert age_bin(age) == label


def test_age_years_stay_inside_the_chosen_bin():
    bins = np.arange(len(AGE_BINS))
    years = age_years(bins, np.full(len(bins), 33.0, np.float32))
    for b, y in zip(bins, years, strict=True):
        assert age_bin(round(float(y), 1)) == AGE_BINS[b]  # rounding to 0.1 never crosses an edge
    assert years[4] == 33.0  # inside its bin (30-39): unchanged
    assert len(AGE_EDGES) == len(AGE_BINS) + 1


def _constant_wide_net(path, logits: dict[str, list[float]], weight: float, race_min: float) -> None:
    """A stand-in wide-crop network: reads a [N, 3, 64, 64] crop, answers the same probabilities for every face."""
    import json

    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["wide"], ["pooled"], axes=[2, 3], keepdims=0)]
    inits, outs = [], []
    for task, b in logits.items():
        w = helper.make_tensor(f"{task}_w", TensorProto.FLOAT, [3, len(b)], [0.0] * (3 * len(b)))
        bias = helper.make_tensor(f"{task}_b", TensorProto.FLOAT, [len(b)], b)
        inits += [w, bias]
        nodes += [
            helper.make_node("MatMul", ["pooled", f"{task}_w"], [f"{task}_z"]),
            helper.make_node("Add", [f"{task}_z", f"{task}_b"], [f"{task}_l"]),
            helper.make_node("Softmax", [f"{task}_l"], [f"{task}_p"], axis=1),
        ]
        outs.append(helper.make_tensor_value_info(f"{task}_p", TensorProto.FLOAT, ["n", len(b)]))
    x = helper.make_tensor_value_info("wide", TensorProto.FLOAT, ["n", 3, 64, 64])
    model = helper.make_model(
        helper.make_graph(nodes, "wide", [x], outs, inits), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    model.metadata_props.add(key="enface_meta", value=json.dumps({"fusion_weight": weight, "race_min_score": race_min}))
    onnx.save(model, str(path))


def test_the_wide_crop_network_is_averaged_with_the_branch_by_its_weight_and_sets_races_threshold(tmp_path):
    from enface_batch.models.attribute_net import AttributeNet, shipped_net
    from enface_batch.models.attributes import RACES

    if shipped_net() is None:
        pytest.skip("no attribute network in enface_batch/data")
    logits = {"gender": [0.0, 2.0], "age": [float(i) for i in range(len(AGE_BINS))], "race": [1.0] * len(RACES)}
    _constant_wide_net(tmp_path / "wide.onnx", logits, weight=0.25, race_min=0.33)
    branch = AttributeNet(use_wide=False)
    fused = AttributeNet(wide=tmp_path / "wide.onnx")
    assert branch.wide is None and "wide" not in branch.blocks and "wide" in fused.blocks
    assert fused.race_min_score == 0.33
    rng = np.random.default_rng(0)
    dim = branch.model.session.get_inputs()[1].shape[1]
    first, *rest = branch.vec_blocks
    feats = {"s14": rng.random((3, 1024, 7, 7), np.float32), first: rng.normal(size=(3, dim)).astype(np.float32)}
    feats |= {b: np.zeros((3, 0), np.float32) for b in rest}
    feats["wide"] = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    p, q = branch.proba(feats), fused.proba(feats)
    for task, b in logits.items():
        want = 0.75 * p[task] + 0.25 * softmax(np.array([b], np.float32))
        np.testing.assert_allclose(q[task], want, atol=1e-5)
        np.testing.assert_allclose(q[task].sum(1), 1.0, atol=1e-5)
