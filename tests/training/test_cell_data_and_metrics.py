"""Cell datasets as they ship (bare instance-mask TIFFs, hundreds of cells) and the cell field's object metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from medmrcnn.errors import DataError
from medmrcnn.labels import LabelMap
from medmrcnn.training.config import DataConfig
from medmrcnn.training.datacheck import build_report
from medmrcnn.training.datalist import load_datalist_items
from medmrcnn.training.metrics import CellMatchAccumulator, match_cells
from medmrcnn.training.preprocess import prepare_volume
from tests.conftest import tiny_config


def _grid_of_cells(n_side: int, size: int = 6, gap: int = 2) -> np.ndarray:
    step = size + gap
    mask = np.zeros((n_side * step, n_side * step), np.uint16)
    for i in range(n_side):
        for j in range(n_side):
            mask[i * step:i * step + size, j * step:j * step + size] = i * n_side + j + 1
    return mask


def test_bare_instance_mask_tiffs_train_a_one_class_model_without_a_table(tmp_path):
    mask = _grid_of_cells(20)  # 400 cells on 160 x 160 px
    image = (mask > 0).astype(np.uint16) * 1000 + 100
    tifffile.imwrite(tmp_path / "img.tif", image, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    tifffile.imwrite(tmp_path / "img_masks.tif", mask)  # no pixel size: it takes the image's grid
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "img.tif", "label": "img_masks.tif"}]}))
    labels = LabelMap.from_names(["nucleus"])
    (item,) = load_datalist_items(tmp_path / "list.json", "training", labels, DataConfig(label_kind="instance"))
    assert len(item.gt_classes) == 400 and set(item.gt_classes.values()) == {1}
    assert item.volume.spacing == pytest.approx((0.0005,) * 3)
    cfg = tiny_config(labels=("nucleus",))
    report = build_report([prepare_volume(item, cfg)], cfg)
    assert report.objects_per_class == {"nucleus": 400}
    assert report.size_percentiles_px["p50"] == 6.0  # anchors are suggested from the cells' own size
    assert report.suggested_anchor_sizes[0][0] == 6
    two_classes = LabelMap.from_names(["nucleus", "cytoplasm"])
    with pytest.raises(DataError, match="need a class table"):
        load_datalist_items(tmp_path / "list.json", "training", two_classes, DataConfig(label_kind="instance"))


def test_object_scores_on_a_crafted_pair():
    gt = np.zeros((30, 40), np.uint16)
    gt[2:12, 2:12] = 1     # found exactly
    gt[15:25, 2:12] = 2    # found shifted by 2 px: IoU 80 / 120 = 0.667
    gt[2:12, 20:30] = 3    # missed
    pred = np.zeros_like(gt)
    pred[2:12, 2:12] = 5
    pred[15:25, 4:14] = 6
    pred[20:28, 30:38] = 7  # a false positive
    m = match_cells(gt, pred, (0.5, 0.7))
    assert m[0.5] == {"tp": 2, "fp": 1, "fn": 1, "iou_sum": pytest.approx(1 + 80 / 120)}
    assert m[0.7] == {"tp": 1, "fp": 2, "fn": 2, "iou_sum": pytest.approx(1.0)}
    acc = CellMatchAccumulator((0.5, 0.7))
    acc.add(gt, pred)
    acc.add(gt, gt)  # a perfect second image: 3 more true positives
    s = acc.scores()
    assert s[0.5]["accuracy"] == pytest.approx(5 / 7) and s[0.5]["f1"] == pytest.approx(10 / 12)
    assert s[0.5]["precision"] == pytest.approx(5 / 6) and s[0.5]["recall"] == pytest.approx(5 / 6)
    assert s[0.5]["mean_matched_iou"] == pytest.approx((4 + 80 / 120) / 5)
    assert acc.dsb_score() == pytest.approx((5 / 7 + 4 / 8) / 2)
    empty = CellMatchAccumulator()
    empty.add(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
    assert empty.dsb_score() == 0.0
