"""Data check: broken items refused with one line; the report counts what is there and suggests anchors."""

import numpy as np
import pytest
import yaml

from medmrcnn.cli import main
from medmrcnn.errors import DataError
from medmrcnn.training import AnnotatedVolume
from medmrcnn.training.datacheck import build_report, suggest_anchor_sizes, validate_item
from medmrcnn.training.preprocess import prepare_volume
from medmrcnn.volume import Volume, affine_from_geometry
from tests.conftest import tiny_config
from tests.training.conftest import micro_train_config


def _item(inst, classes, spacing=0.5):
    vol = Volume(np.zeros(inst.shape, np.int16), affine_from_geometry((spacing, spacing, 2.0), (0, 0, 0)), modality="CT")
    return AnnotatedVolume(vol, inst, classes, "case-7")


def test_broken_items_are_refused():
    inst = np.zeros((2, 16, 16), np.uint16)
    inst[0, 2:5, 2:5] = 3
    with pytest.raises(DataError, match=r"case-7: label values \[3\] are not in the label map"):
        validate_item(_item(inst, {1: 1}), num_classes=2)
    with pytest.raises(DataError, match=r"class ids \[5\]"):
        validate_item(_item(inst, {3: 5}), num_classes=2)
    bad = _item(inst, {3: 1})
    bad.gt_instances = inst[:1]
    with pytest.raises(DataError, match="label shape"):
        validate_item(bad, num_classes=2)
    validate_item(_item(inst, {3: 1}), num_classes=2)


def test_report_counts_objects_sizes_and_empty_slices():
    inst = np.zeros((4, 64, 64), np.uint16)
    inst[0, 0:8, 0:8] = 1      # 8 px = 4 mm at 0.5 mm
    inst[0, 20:60, 20:60] = 2  # 40 px = 20 mm
    inst[1, 0:8, 0:8] = 1
    cfg = tiny_config(labels=("tumour", "liver", "spleen"), intensity="ct:40,400")
    report = build_report([prepare_volume(_item(inst, {1: 1, 2: 2}), cfg)], cfg)
    assert report.n_slices == 4 and report.n_empty_slices == 2
    assert report.objects_per_class == {"tumour": 2, "liver": 1, "spleen": 0}
    assert report.slices_per_class == {"tumour": 2, "liver": 1, "spleen": 0}
    assert report.size_hist_px["8-16px"] == 2 and report.size_hist_px["32-64px"] == 1
    assert report.size_hist_mm["2-5mm"] == 2 and report.size_hist_mm["20-50mm"] == 1
    assert any("spleen" in w for w in report.warnings)
    assert "tumour" in report.format_table() and "suggested" in report.format_table()


def test_anchor_suggestion_spans_the_object_sizes():
    sizes = np.geomspace(10, 300, 200)
    anchors = suggest_anchor_sizes(sizes, num_levels=4, per_level=2)
    flat = [a for lvl in anchors for a in lvl]
    assert len(anchors) == 4 and flat == sorted(flat)
    assert 9 <= flat[0] <= 12 and 250 <= flat[-1] <= 310


def test_train_check_prints_the_report(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(micro_train_config(tmp_path / "run", data__phantom__n_train=2).to_dict()))
    assert main(["train", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "nucleus" in out and "object size (px)" in out
    assert not (tmp_path / "run").exists()  # a check trains nothing and writes nothing


def test_cli_reports_broken_config_in_one_line(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("optim: {lr: 0.1, momentum_typo: 3}\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "momentum_typo" in err and str(path) in err
