"""Initialise from local torchvision weight files (COCO Mask R-CNN or ImageNet ResNet); nothing is downloaded."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from medmrcnn.errors import CheckpointError

log = logging.getLogger(__name__)

# Heads whose shape depends on the number of classes: always re-initialised.
CLASS_SPECIFIC = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointError(f"{path}: cannot read as a plain tensor state dict ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return obj


def _adapt_first_conv(w: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB conv1 kernels -> in_channels kernels that respond to a grey input exactly as the RGB kernels did."""
    return w.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels


def load_torchvision_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a torchvision Mask R-CNN (COCO) or ImageNet ResNet state dict from a local file into `model`.

    Tensors are matched by name and shape; class-specific heads and anything whose shape differs are left at
    their fresh initialisation. The first conv is adapted when the model does not take 3 channels.
    Returns {"loaded": [...], "reinitialised": [...]} for the caller to report.
    """
    path = Path(path)
    src = _read_state_dict(path)
    if any(k.startswith("conv1.") for k in src) and not any(k.startswith("backbone.") for k in src):
        src = {f"backbone.body.{k}": v for k, v in src.items() if not k.startswith("fc.")}
    own = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for k, v in src.items():
        if k not in own or k.startswith(CLASS_SPECIFIC):
            skipped.append(k)
            continue
        if k == "backbone.body.conv1.weight" and v.shape[1] != own[k].shape[1]:
            v = _adapt_first_conv(v, own[k].shape[1])
        if v.shape != own[k].shape:
            skipped.append(k)
            continue
        new[k] = v
    if not new:
        raise CheckpointError(f"{path}: no tensor matches this model; is it a torchvision Mask R-CNN or ResNet file?")
    model.load_state_dict(new, strict=False)
    log.info("loaded %d tensors from %s; %d re-initialised", len(new), path.name, len(skipped))
    return {"loaded": sorted(new), "reinitialised": sorted(set(own) - set(new))}
