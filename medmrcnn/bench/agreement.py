"""Do two pipelines find the same instances? Per-slice one-to-one matching (same class, box IoU and mask IoU).

A speed-up only counts when the faster pipeline's output agrees with the baseline's (`agrees`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from medmrcnn.structures import SliceInstances

# Two detections are the same instance at mask IoU >= 0.5 (the usual instance-matching rule, COCO's loosest).
MATCH_IOU = 0.5
# Agreement: at least 95 % of the instances matched both ways (F1), and the matched masks nearly identical
# (mean IoU >= 0.85 tolerates the one-pixel edge differences of bilinear mask pasting at different resolutions).
AGREE_F1 = 0.95
AGREE_MEAN_IOU = 0.85
# Untrained weights: the same detection has the same score (float16 autocast on CUDA moves scores by ~1e-3).
SCORE_TOLERANCE = 0.01


def mask_iou(a: SliceInstances, b: SliceInstances) -> np.ndarray:
    """float64[N, M] mask IoU between the instances of two slices of the same grid; 0 across classes."""
    inter = a.intersection(b).astype(np.float64)
    union = a.area()[:, None] + b.area()[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou * (a.labels[:, None] == b.labels[None, :])


def box_iou(a: SliceInstances, b: SliceInstances) -> np.ndarray:
    """float64[N, M] IoU of the instances' boxes (tight around their masks); 0 across classes."""
    x0 = np.maximum(a.boxes[:, None, 0], b.boxes[None, :, 0])
    y0 = np.maximum(a.boxes[:, None, 1], b.boxes[None, :, 1])
    x1 = np.minimum(a.boxes[:, None, 2], b.boxes[None, :, 2])
    y1 = np.minimum(a.boxes[:, None, 3], b.boxes[None, :, 3])
    inter = (np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)).astype(np.float64)
    area = lambda s: ((s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1])).astype(np.float64)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou * (a.labels[:, None] == b.labels[None, :])


def score_similarity(a: SliceInstances, b: SliceInstances) -> np.ndarray:
    """float64[N, M] 1 where two instances have the same class and scores within SCORE_TOLERANCE, else 0."""
    close = np.abs(a.scores[:, None] - b.scores[None, :]) <= SCORE_TOLERANCE
    return (close & (a.labels[:, None] == b.labels[None, :])).astype(np.float64)


def _match(ours: Sequence[SliceInstances], reference: Sequence[SliceInstances], similarity) -> dict[str, Any]:
    """One-to-one matching per slice at similarity >= MATCH_IOU: counts, F1, mean similarity, largest score
    difference."""
    n_ours = n_ref = 0
    ious: list[float] = []
    score_diff = 0.0
    for a, b in zip(ours, reference, strict=True):
        n_ours, n_ref = n_ours + len(a), n_ref + len(b)
        if not len(a) or not len(b):
            continue
        iou = similarity(a, b)
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= MATCH_IOU
        ious += iou[rows, cols][good].tolist()
        if good.any():
            score_diff = max(score_diff, float(np.abs(a.scores[rows[good]] - b.scores[cols[good]]).max()))
    f1 = 2 * len(ious) / (n_ours + n_ref) if n_ours + n_ref else None
    return {"instances": n_ours, "reference_instances": n_ref, "matched": len(ious),
            "f1": None if f1 is None else round(f1, 4),
            "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
            "max_score_difference": round(score_diff, 4)}


def _agree(m: dict[str, Any]) -> bool:
    return bool(m["reference_instances"] and m["f1"] is not None and m["f1"] >= AGREE_F1
                and m["mean_iou"] is not None and m["mean_iou"] >= AGREE_MEAN_IOU)


def compare_detections(ours: Sequence[SliceInstances], reference: Sequence[SliceInstances],
                       compare_masks: bool = True) -> dict[str, Any]:
    """How well `ours` reproduces `reference`, slice by slice (same number of slices).

    Matches by box (class + IoU of the boxes around the masks), by mask (class + mask IoU) and by score (class +
    score within SCORE_TOLERANCE). `agrees` needs boxes and masks to reach AGREE_F1 and AGREE_MEAN_IOU. With
    compare_masks=False (untrained weights) it needs the scores to match instead: such a network's masks are
    noise, which bilinear pasting at other sample points turns into other pixels (and other boxes around them),
    while the same detection still has the same class and score. False when the reference found nothing.
    """
    if len(ours) != len(reference):
        raise ValueError(f"{len(ours)} slices vs {len(reference)} in the reference")
    boxes, masks = _match(ours, reference, box_iou), _match(ours, reference, mask_iou)
    scores = _match(ours, reference, score_similarity)
    if compare_masks:
        agrees = _agree(boxes) and _agree(masks)
        rule = (f"one-to-one, same class, IoU >= {MATCH_IOU}; agrees when F1 >= {AGREE_F1} and mean IoU >= "
                f"{AGREE_MEAN_IOU} for boxes and masks")
    else:
        agrees = bool(scores["reference_instances"] and scores["f1"] is not None and scores["f1"] >= AGREE_F1)
        rule = (f"untrained weights (noise masks): one-to-one, same class, score within {SCORE_TOLERANCE}; agrees "
                f"when F1 >= {AGREE_F1}")
    return {"instances": boxes["instances"], "reference_instances": boxes["reference_instances"],
            "boxes": boxes, "masks": masks, "scores": scores, "agrees": agrees, "rule": rule}
