"""Photos of one size share a detector run (ENFACE_DET_BATCH): the faces found must not depend on it."""

from __future__ import annotations

import numpy as np

from enface_batch import imaging
from enface_batch.analyze import Analyzer


def _photos(test_data):
    lfw = sorted((test_data / "lfw_dev/images").glob("*/*.jpg"))[:12]  # all 250x250: batched together
    crowd = sorted((test_data / "fixtures/group_photos").glob("*.jpg"))[:3]  # other sizes: runs of one
    return [imaging.load(str(p)) for p in lfw[:6] + crowd + lfw[6:]]


def test_batched_detection_finds_the_same_faces_as_one_photo_at_a_time(analyzer, test_data):
    photos = _photos(test_data)
    detector = analyzer.pack.detector
    one = [detector.detect(p.rgb) for p in photos]
    many = detector.detect_many([p.rgb for p in photos], max_batch=8)
    assert sum(len(d) for d in one) >= len(photos)  # real faces were found, crowds included
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.kps, b.kps, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_the_analyzer_gives_the_same_faces_and_embeddings_whatever_the_detector_batch(analyzer, test_data):
    photos = _photos(test_data)
    batched = analyzer.analyze_images(photos)
    single = Analyzer(analyzer.pack)
    single.det_batch = 1
    alone = single.analyze_images(photos)
    assert [len(r.faces) for r in batched] == [len(r.faces) for r in alone]
    for r, s in zip(batched, alone, strict=True):
        for f, g in zip(r.faces, s.faces, strict=True):
            assert f.bbox == g.bbox
            assert float(f.embedding @ g.embedding) > 0.9999
