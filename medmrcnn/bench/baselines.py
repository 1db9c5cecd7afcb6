"""The plain torchvision pipelines medmrcnn is measured against: what a user writes without medmrcnn.

Same network, same weights, same normalised slices; the differences are exactly the ones medmrcnn makes:
torchvision's `GeneralizedRCNNTransform` (by default every slice is resized so its short side is 800 px),
one slice per call, full-frame mask pasting, and a bare optimisation loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from medmrcnn.modeling import load_model
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.structures import SliceInstances
from medmrcnn.transforms import normalise_volume, resize_slices, resolve_intensity, slice_with_context
from medmrcnn.volume import Volume

TORCHVISION_MIN_SIZE, TORCHVISION_MAX_SIZE = 800, 1333  # maskrcnn_resnet50_fpn's defaults


def torchvision_transform(model_cfg: ModelConfig, size_yx: tuple[int, int] | None = None) -> GeneralizedRCNNTransform:
    """torchvision's transform: its default 800/1333 resize rule (size_yx None), or fixed to `size_yx` pixels.

    Mean 0 / std 1: the weights expect medmrcnn's [0, 1] slices (ImageNet statistics would change every output).
    """
    c = model_cfg.in_channels
    lo, hi = (TORCHVISION_MIN_SIZE, TORCHVISION_MAX_SIZE) if size_yx is None else (min(size_yx), max(size_yx))
    return GeneralizedRCNNTransform(lo, hi, image_mean=[0.0] * c, image_std=[1.0] * c)


def load_torchvision_model(weights: str | Path, size_yx: tuple[int, int] | None, device: str
                           ) -> tuple[nn.Module, ModelConfig]:
    """The checkpoint's Mask R-CNN (eval mode, on `device`) behind torchvision's own transform."""
    model, cfg = load_model(weights, device=device)
    model.transform = torchvision_transform(cfg, size_yx)
    return model.eval(), cfg


def compact(scores: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> SliceInstances:
    """Full-frame bool masks [N, H, W] -> SliceInstances, highest score first (each mask cropped to its pixels;
    empty ones dropped)."""
    order = torch.sort(scores, descending=True, stable=True).indices  # highest score first, as medmrcnn's
    scores, labels, masks_np = scores[order], labels[order], masks[order].cpu().numpy()
    boxes, kept, crops = [], [], []
    for i, m in enumerate(masks_np):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if not len(rows):
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        boxes.append((x0, y0, x1, y1))
        crops.append(m[y0:y1, x0:x1])
        kept.append(i)
    return SliceInstances(masks_np.shape[1:], np.array(boxes, dtype=np.int64).reshape(-1, 4),
                          scores.cpu().numpy()[kept], labels.cpu().numpy()[kept], crops)


def torchvision_inference_loop(model: nn.Module, model_cfg: ModelConfig, volume: Volume, device: str,
                               size_yx: tuple[int, int] | None = None, score_threshold: float = 0.5,
                               mask_threshold: float = 0.5) -> list[SliceInstances]:
    """Normalise with the model's preset, then `model([slice])` one slice at a time; keep detections scoring
    >= score_threshold with masks >= mask_threshold (one SliceInstances per slice, on the volume's grid).

    With `size_yx`, each slice is first resampled to that size as medmrcnn resamples its training and inference
    slices (anti-aliased bilinear), and the masks torchvision returns on that grid are resampled back (bilinear
    probabilities, then the threshold): torchvision's own resize is plain bilinear, which changes borderline
    detections of a network trained on anti-aliased slices.
    """
    image = normalise_volume(volume, resolve_intensity(model_cfg.intensity, volume.modality))
    k = model_cfg.context_slices
    h, w = image.shape[1:]
    out = []
    with torch.inference_mode():
        for z in range(image.shape[0]):
            x = torch.from_numpy(slice_with_context(image, z, k)).to(device)
            if size_yx is not None:
                x = resize_slices(x[None], size_yx)[0]
            pred = model([x])[0]
            keep = pred["scores"] >= score_threshold
            probs = pred["masks"][keep]
            if probs.shape[-2:] != (h, w):
                probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
            out.append(compact(pred["scores"][keep], pred["labels"][keep], probs[:, 0] >= mask_threshold))
    return out


def torchvision_training_loop(model: nn.Module, batches: Iterable, device: str, lr: float, weight_decay: float,
                              on_step: Callable[[], None]) -> None:
    """The bare loop: AdamW, `sum(model(images, targets).values()).backward()`, step; `on_step()` after each step
    (the loss is read back first, which waits for the device)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    for images, targets in batches:
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        on_step()
