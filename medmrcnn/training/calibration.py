"""Threshold calibration on validation data, as StarDist's `optimize_thresholds`: sweep NMS, score and mask
thresholds, keep those that maximise the object accuracy averaged over IoU 0.5..0.95 (the DSB2018 score), per class.

The network runs once per NMS value (its box NMS lives inside torchvision's heads); score and mask thresholds are
swept on the raw detections through the predictor's own post-processing and 3D assembly, so the chosen values
reproduce exactly at inference. The result goes into the checkpoint's ModelConfig: `box_nms_thresh` and
`extra["thresholds"]` = {"score", "mask", "per_class": {name: {"score", "mask", "dsb_score"}}, "dsb_score",
"grid", "data"}, which `SliceWisePredictor` and `medmrcnn infer` use as their defaults.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.modeling import load_model, read_checkpoint, save_checkpoint
from medmrcnn.runtime import resolve_device
from medmrcnn.training.items import AnnotatedVolume
from medmrcnn.training.metrics import CELL_IOU_THRESHOLDS, CellMatchAccumulator

log = logging.getLogger(__name__)

SCORE_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MASK_GRID = (0.3, 0.4, 0.5, 0.6)
NMS_GRID = (0.3, 0.4, 0.5, 0.6)


def _class_maps(result: Any, class_id: int) -> np.ndarray:
    """The instance map of one class (other instances zeroed)."""
    ids = [r.id for r in result.instances if r.class_id == class_id]
    return np.where(np.isin(result.instance_map, ids), result.instance_map, 0)


def calibrate_thresholds(
    checkpoint: str | Path,
    items: Sequence[AnnotatedVolume],
    *,
    device: str = "auto",
    score_grid: Sequence[float] = SCORE_GRID,
    mask_grid: Sequence[float] = MASK_GRID,
    nms_grid: Sequence[float] = NMS_GRID,
) -> dict[str, Any]:
    """Best thresholds of `checkpoint` on annotated `items` (their instance ids and classes are the truth).

    Returns {"nms", "score", "mask", "dsb_score", "per_class": {name: {"score", "mask", "dsb_score"}},
    "table": [{"nms", "score", "mask", "dsb_score"}, ...]}; the global choice maximises the DSB2018 score over
    all classes, the per-class ones each class's own (at the chosen NMS).
    """
    from medmrcnn.inference import PredictorConfig, SliceWisePredictor
    from medmrcnn.inference.postprocess import to_slice_instances
    from medmrcnn.structures import SliceInstances

    model, model_cfg = load_model(checkpoint, device=resolve_device(device))
    names = model_cfg.labels
    # The network keeps everything a threshold of the grid could want; the predictor links without fragments
    # removed by size, exactly as at inference.
    model.roi_heads.score_thresh = min(min(score_grid), model_cfg.box_score_thresh)
    predictor = SliceWisePredictor(model, model_cfg, PredictorConfig())
    table: list[dict[str, Any]] = []
    per_class_table: list[dict[str, Any]] = []
    for nms in nms_grid:
        model.roi_heads.nms_thresh = float(nms)
        raw = []
        for item in items:
            dets = list(predictor.detect_slices(item.volume))
            raw.append((item, dets))
        for mask_t in mask_grid:
            for score_t in score_grid:
                overall = CellMatchAccumulator(CELL_IOU_THRESHOLDS)
                by_class = {c: CellMatchAccumulator(CELL_IOU_THRESHOLDS) for c in range(1, len(names) + 1)}
                for item, dets in raw:
                    _, h, w = item.volume.shape
                    slices = [SliceInstances((h, w)) for _ in range(item.volume.shape[0])]
                    for z, det, scale_xy in dets:
                        slices[z] = to_slice_instances(det, (h, w), scale_xy, score_t, mask_t,
                                                       predictor.cfg.duplicate_overlap)
                    result = predictor.assemble(item.volume, slices)
                    gt, gt_classes = item.lesions()
                    overall.add(gt, result.instance_map)
                    for c, acc in by_class.items():
                        gt_ids = [i for i, k in gt_classes.items() if k == c]
                        acc.add(np.where(np.isin(gt, gt_ids), gt, 0), _class_maps(result, c))
                row = {"nms": float(nms), "score": float(score_t), "mask": float(mask_t),
                       "dsb_score": round(overall.dsb_score(), 5),
                       "accuracy_50": round(overall.scores()[0.5]["accuracy"], 5)}
                table.append(row)
                per_class_table.append({**row, "classes": {names[c - 1]: acc.dsb_score() for c, acc in
                                                           by_class.items()}})
    best = max(table, key=lambda r: (r["dsb_score"], r["accuracy_50"], -abs(r["score"] - 0.5)))
    at_nms = [r for r in per_class_table if r["nms"] == best["nms"]]
    per_class = {}
    for name in names:
        top = max(at_nms, key=lambda r: (r["classes"][name], -abs(r["score"] - best["score"])))
        per_class[name] = {"score": top["score"], "mask": top["mask"], "dsb_score": round(top["classes"][name], 5)}
    log.info("calibrated: nms %.2f score %.2f mask %.2f (DSB score %.3f)", best["nms"], best["score"], best["mask"],
             best["dsb_score"])
    return {"nms": best["nms"], "score": best["score"], "mask": best["mask"], "dsb_score": best["dsb_score"],
            "accuracy_50": best["accuracy_50"], "per_class": per_class, "table": table}


def write_calibrated_checkpoint(checkpoint: str | Path, calibration: dict[str, Any], output: str | Path,
                                data: str = "") -> Path:
    """Copy `checkpoint` to `output` (may be the same path; written atomically) with the calibrated NMS in
    ModelConfig.box_nms_thresh and the thresholds in ModelConfig.extra["thresholds"]."""
    ckpt = read_checkpoint(checkpoint)
    thresholds = {k: calibration[k] for k in ("score", "mask", "dsb_score", "accuracy_50", "per_class")}
    thresholds |= {"nms": calibration["nms"], "data": data,
                   "grid": {k: sorted({r[k] for r in calibration["table"]}) for k in ("nms", "score", "mask")}}
    cfg = dataclasses.replace(ckpt.config, box_nms_thresh=calibration["nms"],
                              extra={**ckpt.config.extra, "thresholds": thresholds})
    model, _ = load_model(checkpoint, device="cpu")
    return save_checkpoint(output, model, cfg, extra=ckpt.extra)
