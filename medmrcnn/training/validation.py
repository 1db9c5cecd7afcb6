"""Validation during training: slice predictions on prepared volumes -> COCO AP and per-class Dice."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medmrcnn.modeling.config import ModelConfig
from medmrcnn.training.metrics import DiceAccumulator, coco_metrics, paint_class_map
from medmrcnn.training.preprocess import PreparedVolume
from medmrcnn.training.targets import instances_to_target
from medmrcnn.transforms import slice_with_context


@torch.inference_mode()
def predict_prepared(
    model: nn.Module, pv: PreparedVolume, cfg: ModelConfig, device: torch.device, batch_size: int = 4,
    mask_threshold: float = 0.5,
) -> list[dict[str, np.ndarray]]:
    """Per slice of `pv`: boxes (N, 4) xyxy px, labels (N,), scores (N,), masks bool (N, H, W) on the prepared grid."""
    model.eval()
    out = []
    depth = pv.image.shape[0]
    for z0 in range(0, depth, batch_size):
        batch = [torch.from_numpy(slice_with_context(pv.image, z, cfg.context_slices).astype(np.float32)).to(device)
                 for z in range(z0, min(z0 + batch_size, depth))]
        for det in model(batch):
            out.append({
                "boxes": det["boxes"].float().cpu().numpy(), "labels": det["labels"].cpu().numpy(),
                "scores": det["scores"].float().cpu().numpy(),
                "masks": (det["masks"][:, 0] > mask_threshold).cpu().numpy(),
            })
    return out


def validate(
    model: nn.Module, volumes: list[PreparedVolume], cfg: ModelConfig, device: torch.device, batch_size: int = 4,
    min_pixels: int = 1, score_threshold: float = 0.5,
) -> dict[str, float]:
    """COCO box/mask AP over every slice of `volumes` and Dice per class (painted at score >= score_threshold).

    Returns flat metrics: bbox_AP.., mask_AP.., dice_<class name> and dice_mean (over classes with truth).
    """
    gts, preds = [], []
    dice = DiceAccumulator(len(cfg.labels))
    for pv in volumes:
        vol_preds = predict_prepared(model, pv, cfg, device, batch_size)
        for z, pred in enumerate(vol_preds):
            gt = instances_to_target(pv.instances[z], pv.classes, min_pixels=min_pixels)
            gts.append(gt)
            preds.append(pred)
            lut = np.zeros(int(pv.instances[z].max(initial=0)) + 1, dtype=np.uint8)
            for i, c in pv.classes.items():
                if i < len(lut):
                    lut[i] = c
            dice.add(paint_class_map(pred, pv.instances[z].shape, score_threshold), lut[pv.instances[z]])
    metrics = coco_metrics(gts, preds, len(cfg.labels), max_dets=cfg.detections_per_image)
    per_class = dice.dice()
    for c, d in per_class.items():
        metrics[f"dice_{cfg.labels[c - 1]}"] = d
    metrics["dice_mean"] = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return metrics
