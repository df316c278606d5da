"""The accuracy report command on small subsets: it runs end to end and its figures are far above chance, so a
broken model, a mis-wired head or a wrong crop is caught here rather than in the full benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from enface_batch.models.heads import RACES


@pytest.fixture(scope="module")
def quick_report(test_data, tmp_path_factory):
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib (the test extra has it)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside the package, not in it
    from bench.accuracy import main

    out = tmp_path_factory.mktemp("accuracy")
    return out, main(["--quick", "--out", str(out)])


def test_quick_report_figures_are_far_above_chance(quick_report):
    _, fig = quick_report
    a, v, d = fig["attributes"], fig["verification"], fig["detection"]
    assert a["faces_found"] >= 0.97 * a["images"] >= 97
    # chance: race 1/7, gender 1/2, age bin or adjacent about 3/9; the full set gives about 65 / 91 / 93 %
    assert a["race_top1"] > 0.45
    assert a["gender_accuracy"] > 0.80
    assert a["age_bin_or_adjacent"] > 0.80
    assert a["age_bin_accuracy"] > 0.35
    assert sum(sum(r) for r in a["race_confusion"]) == a["faces_found"]
    assert set(a["race_recall"]) == set(RACES)
    assert 0 <= a["race_unknown_share"] < 0.5
    assert v["accuracy"] > 0.95 and v["no_face"] == 0
    assert v["thresholds"]["80"]["fmr"] > v["thresholds"]["95"]["fmr"]
    assert d["recall"] > 0.7 and d["precision"] > 0.7


def test_quick_report_writes_its_table_and_small_pictures(quick_report):
    out, fig = quick_report
    text = (out / "README.md").read_text()
    assert "| race top-1 (7 classes)" in text and "| gender |" in text and "lfw_dev" in text
    assert json.loads((out / "figures.json").read_text())["floors"].keys() >= {"race_top1", "lfw_accuracy"}
    for name in ("verification_det.png", "race_confusion.png", "age_error_by_bin.png", "detection_pr.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 200_000, name
        assert f"({name})" in text
