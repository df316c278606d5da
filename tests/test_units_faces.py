"""face_json: the seed's JSON shape of one face, which detect, compare, person create and action all return."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from enface_batch.analyze import Face
from enface_batch.ops.shapes import face_json


def _face(**features) -> Face:
    return Face(
        index=2,
        bbox=[10.4, 20.6, 110.5, 140.49],
        bbox_pro=[[10.4, 20.6], [110.5, 20.6], [110.5, 140.49], [10.4, 140.49]],
        det_score=0.987654,
        landmarks=[[0, 0]] * 5,
        square=100.1,
        yaw=-12.3,
        pitch=4.0,
        roll=1.0,
        embedding=np.ones(128, np.float32),
        thumb=np.full((112, 112, 3), 200, np.uint8),
        features=features,
    )


def test_the_minimal_shape_is_index_score_square_yaw():
    # `score` (the seed's name) is the detector's confidence; det_score names it apart from the Enface %
    assert face_json(_face()) == {"face": 2, "score": 0.9877, "det_score": 0.9877, "square": 100.1, "yaw": -12.3}


def test_boxes_are_whole_pixels_and_only_when_asked():
    out = face_json(_face(), bbox=True, bbox_pro=True)
    assert out["bbox"] == [10, 21, 110, 140]  # Python rounds halves to even: 110.5 -> 110
    assert out["bbox_pro"] == [[10, 21], [110, 21], [110, 140], [10, 140]]
    assert all(isinstance(v, int) for v in out["bbox"])
    assert "thumb" not in out and "features" not in out


def test_thumb_is_a_base64_jpeg_of_the_aligned_crop():
    out = face_json(_face(), thumb=True)
    img = Image.open(io.BytesIO(base64.b64decode(out["thumb"])))
    assert img.format == "JPEG" and img.size == (112, 112)
    assert abs(np.asarray(img).astype(int).mean() - 200) < 3


def test_features_are_rounded_and_age_gets_its_bin():
    face = _face(gender="female", gender_score=0.912345, age=29.96, race="Indian", race_score=0.5)
    out = face_json(face)
    assert out["features"] == {
        "gender": "female",
        "gender_score": 0.912,
        "age": 30.0,
        "age_bin": "30-39",  # the bin of the rounded age the client sees, not of 29.96
        "race": "Indian",
        "race_score": 0.5,
    }
    assert face.features["age"] == 29.96 and "age_bin" not in face.features  # the face itself is not changed
    assert "features" not in face_json(face, features=False)
