"""Metrics: COCO AP from faster-coco-eval behaves as COCO defines it; Dice and lesion matching on crafted maps."""

import numpy as np
import pytest
import torch

from medmrcnn.training.metrics import (
    DiceAccumulator, boundary_f1, coco_metrics, dice, lesion_summary, match_instances,
)
from medmrcnn.training.targets import instances_to_target


def _slice():
    inst = np.zeros((40, 40), np.uint16)
    inst[2:12, 2:12] = 1
    inst[20:35, 8:36] = 2
    return inst, {1: 1, 2: 2}


def _pred_from(inst, classes, scores):
    t = instances_to_target(inst, classes)
    return {"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy(), "scores": np.asarray(scores, np.float32),
            "masks": t["masks"].numpy().astype(bool)}


def test_perfect_predictions_score_one_and_misses_lower_recall():
    inst, classes = _slice()
    gt = instances_to_target(inst, classes)
    perfect = coco_metrics([gt], [_pred_from(inst, classes, [0.9, 0.8])], num_classes=2)
    assert all(v == pytest.approx(1.0) for v in perfect.values()), perfect
    only_first = inst.copy()
    only_first[only_first == 2] = 0
    half = coco_metrics([gt], [_pred_from(only_first, classes, [0.9])], num_classes=2)
    assert half["mask_AP50"] == pytest.approx(0.5, abs=0.01)  # class 2 never found: AP 0 for it, 1 for class 1


def test_a_shifted_mask_fails_at_high_iou_only():
    inst, classes = _slice()
    gt = instances_to_target(inst, classes)
    shifted = np.roll(inst, 2, axis=1)  # IoU: 10x10 square 80/120 = 0.67, 15x28 box 390/450 = 0.87
    m = coco_metrics([gt], [_pred_from(shifted, classes, [0.9, 0.8])], num_classes=2)
    assert m["mask_AP50"] == pytest.approx(1.0)
    assert m["mask_AP75"] == pytest.approx(0.5, abs=0.01)


def test_empty_predictions_and_empty_truth():
    inst, classes = _slice()
    gt = instances_to_target(inst, classes)
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0),
             "masks": np.zeros((0, 40, 40), bool)}
    assert coco_metrics([gt], [empty], 2)["mask_AP"] == 0.0
    nothing = instances_to_target(np.zeros((8, 8), np.uint16), {})
    assert coco_metrics([nothing], [empty], 2)["mask_AP"] == -1.0


def test_dice_per_class():
    gt = np.zeros((2, 10, 10), np.uint8)
    gt[0, :5] = 1
    gt[1, :, :2] = 2
    pred = gt.copy()
    pred[0, 4] = 0  # 10 of 50 liver voxels missed
    acc = DiceAccumulator(3)
    acc.add(pred, gt)
    d = acc.dice()
    assert d[1] == pytest.approx(2 * 40 / 90) and d[2] == 1.0 and 3 not in d


def test_lesion_matching_is_one_to_one_and_counts_false_positives():
    gt = np.zeros((4, 20, 20), np.uint16)
    gt[0:2, 2:6, 2:6] = 1
    gt[1:4, 10:16, 10:16] = 2
    gt[0, 18:20, 0:2] = 3  # missed lesion
    pred = np.zeros_like(gt)
    pred[0:2, 2:6, 2:6] = 5           # exact
    pred[1:4, 10:16, 11:16] = 6       # most of lesion 2
    pred[3, 0:3, 0:3] = 7             # false positive
    rows = match_instances(gt, {1: 1, 2: 1, 3: 1}, pred, {5: 1, 6: 1, 7: 1})
    by_gt = {r["gt_id"]: r for r in rows if r["gt_id"]}
    assert by_gt[1]["pred_id"] == 5 and by_gt[1]["dice"] == 1.0
    assert by_gt[2]["pred_id"] == 6 and by_gt[2]["dice"] == pytest.approx(2 * 90 / (108 + 90))
    assert by_gt[3]["pred_id"] is None
    summary = lesion_summary([rows], 1)[1]
    assert summary["sensitivity"] == pytest.approx(2 / 3) and summary["fp_per_volume"] == 1.0 and summary["n_gt"] == 3
    # A prediction of another class never matches.
    rows = match_instances(gt, {1: 1, 2: 1, 3: 1}, pred, {5: 2, 6: 1, 7: 1})
    assert next(r for r in rows if r["gt_id"] == 1)["pred_id"] is None


def test_dice_and_boundary_f1_of_rings():
    yy, xx = np.mgrid[0:80, 0:80] + 0.5
    r = np.hypot(yy - 40, xx - 40)
    ring = (r <= 30) & (r > 26)
    assert dice(ring, ring) == 1.0 and boundary_f1(ring, ring, (0.5, 0.5)) == 1.0
    filled = r <= 30  # the 28 x 28 head's failure: the hole filled in
    assert dice(ring, filled) == pytest.approx(2 * ring.sum() / (ring.sum() + filled.sum()))
    # Outer edge right, inner edge missing: half the true boundary is unmatched.
    assert 0.5 < boundary_f1(ring, filled, (0.5, 0.5), 1.0) < 0.75
    # Half a pixel more radius on each side (most edge pixels move): within 1 mm, mostly not within 0.25 mm.
    thick = (r <= 30.5) & (r > 25.5)
    assert boundary_f1(ring, thick, (0.5, 0.5), 1.0) == 1.0 and boundary_f1(ring, thick, (0.5, 0.5), 0.25) < 0.6
    empty = np.zeros_like(ring)
    assert boundary_f1(ring, empty, (1, 1)) == 0.0 and boundary_f1(empty, empty, (1, 1)) == 1.0
    assert dice(empty, empty) == 1.0
