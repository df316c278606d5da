"""ENFACE_DET_MODE: 'thorough' finds more of the faces in a crowd than 'fast', both stay precise on CMU+MIT,
the setting reaches `enface detect` as users call it, and the profiles it finds cannot create persons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enface_batch.analyze import Analyzer
from enface_batch.models import load_pack
from enface_batch.models.multiview import View, fuse
from enface_batch.settings import get_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import detection_eval  # noqa: E402

CROWD = "group_photos/ultralight/17.jpg"  # a dense crowd of the dev split (bench/labels/crowd_faces.json)
PROFILES = "group_photos/ultralight/24.jpg"  # a row of people in profile, looking to image-left


@pytest.fixture(scope="module")
def packs():
    """The default pack in each detector mode, built the way the CLI builds it (from the setting)."""
    out = {}
    saved = os.environ.get("ENFACE_DET_MODE")
    try:
        for mode in ("fast", "thorough"):
            os.environ["ENFACE_DET_MODE"] = mode
            get_settings.cache_clear()
            out[mode] = load_pack("embedded")
    finally:
        if saved is None:
            os.environ.pop("ENFACE_DET_MODE", None)
        else:
            os.environ["ENFACE_DET_MODE"] = saved
        get_settings.cache_clear()
    return out


def test_fast_is_the_default():
    assert get_settings().det_mode == "fast"


def test_thorough_finds_more_labelled_faces_in_a_crowd_and_both_stay_precise_on_cmu_mit(packs, test_data):
    crowd = [x for x in detection_eval.load_set("crowd", "dev") if x[0].endswith(CROWD)]
    cmu = detection_eval.load_set("mitcmu")
    detectors = {m: p.detector.detect for m, p in packs.items()}
    on_crowd = detection_eval.evaluate(detectors, crowd, set_name="crowd")
    on_cmu = detection_eval.evaluate(detectors, cmu, set_name="mitcmu")
    fast_crowd, th_crowd = on_crowd["fast"], on_crowd["thorough"]
    fast_cmu, th_cmu = on_cmu["fast"], on_cmu["thorough"]
    assert th_crowd["recall"] > fast_crowd["recall"] + 0.02
    assert th_crowd["precision"] >= 0.95
    assert th_cmu["recall"] > fast_cmu["recall"]
    for r in (fast_cmu, th_cmu):
        assert r["precision"] >= 0.97
        assert r["dets_per_face"] <= 1.3


def test_the_setting_reaches_enface_detect(test_data):
    photo = test_data / "fixtures" / CROWD

    def count(mode: str) -> int:
        env = {**os.environ, "ENFACE_DET_MODE": mode}
        p = subprocess.run(
            [sys.executable, "-m", "enface_batch", "detect", str(photo), "--multi", "--bbox"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        return sum(len(r["faces"]) for r in out["results"])

    assert count("thorough") > count("fast")
    bad = subprocess.run(
        [sys.executable, "-m", "enface_batch", "detect", str(photo)],
        capture_output=True,
        text=True,
        env={**os.environ, "ENFACE_DET_MODE": "slow"},
        timeout=600,
    )
    assert bad.returncode != 0 and "det_mode" in (bad.stderr + bad.stdout).lower()


def test_profiles_found_by_thorough_read_as_turned_and_create_no_person(packs, test_data, tmp_path):
    """The 5-point yaw saturates at 90 deg on a profile; it must still read as turned, so the yaw rule holds."""
    from enface_batch.lake.store import Lake
    from enface_batch.ops import persons

    photo = str(test_data / "fixtures" / PROFILES)
    an = Analyzer(packs["thorough"])
    res = next(an.analyze_uris([photo]))
    # The five largest faces are all in profile (checked by eye); boxes from the crowd labels.
    labels = detection_eval.crowd_labels()[PROFILES]["faces"]
    big = [b for b in labels if b[2] - b[0] >= 75]
    assert len(big) == 5
    boxes = np.array([f.bbox for f in res.faces], np.float32)
    for b in big:
        i = int(np.argmax(detection_eval.iou(np.array([b], np.float32), boxes)[0]))
        assert abs(res.faces[i].yaw) > 45, res.faces[i]
    made = persons.create_person(
        Lake(str(tmp_path / "lake")), an, photo, multi=True, new_person_square_min=50, new_person_yaw_max=30
    )
    faces = made["persons"]
    created = [f for f in faces if f["created"]]
    assert all(abs(f["yaw"]) <= 30 for f in created)
    assert sum("yaw" in f.get("reason", "") for f in faces) >= 5


def test_mirror_view_maps_boxes_and_landmarks_back(packs, test_data):
    """A face found on the mirror image lands where it is in the photo, with left and right landmarks in order."""
    from enface_batch import imaging

    img = imaging.load(str(test_data / "fixtures/face_recognition_examples/examples/obama.jpg"))
    yunet = packs["fast"].detector.primary
    plain = View(yunet).detect(img.rgb)
    mirrored = View(yunet, flip=True).detect(img.rgb)
    assert len(plain) == len(mirrored) == 1
    assert np.abs(plain.boxes - mirrored.boxes).max() < 0.05 * (plain.boxes[0, 2] - plain.boxes[0, 0])
    assert np.abs(plain.kps - mirrored.kps).max() < 0.1 * (plain.boxes[0, 2] - plain.boxes[0, 0])
    fused, votes = fuse([plain, mirrored])
    assert len(fused) == 1 and votes.tolist() == [2]
