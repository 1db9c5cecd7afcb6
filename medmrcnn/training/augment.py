"""Augmentation with MONAI dictionary transforms, applied identically to the image and its instance id map.

Spatial transforms move "image" (C, H, W) bilinearly and "instances" (1, H, W) with nearest neighbour, so instance
ids survive; boxes and masks are then recomputed from the transformed id map (training.targets).
"""

from __future__ import annotations

import math

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from medmrcnn.training.config import AugmentConfig

KEYS = ("image", "instances")


def build_augmentation(cfg: AugmentConfig) -> Compose | None:
    """The MONAI Compose for `cfg`, or None when augmentation is disabled."""
    if not cfg.enabled:
        return None
    t = []
    if cfg.flip_prob > 0:
        t += [RandFlipd(KEYS, prob=cfg.flip_prob, spatial_axis=0), RandFlipd(KEYS, prob=cfg.flip_prob, spatial_axis=1)]
    if cfg.rot90_prob > 0:
        t.append(RandRotate90d(KEYS, prob=cfg.rot90_prob, max_k=3))
    if cfg.affine_prob > 0:
        t.append(RandAffined(
            KEYS, prob=cfg.affine_prob, rotate_range=math.radians(cfg.rotate_deg), scale_range=(cfg.scale, cfg.scale),
            translate_range=(cfg.translate_px, cfg.translate_px), mode=("bilinear", "nearest"), padding_mode="zeros",
        ))
    if cfg.intensity_prob > 0:
        t += [
            RandScaleIntensityd("image", factors=cfg.intensity_scale, prob=cfg.intensity_prob),
            RandShiftIntensityd("image", offsets=cfg.intensity_shift, prob=cfg.intensity_prob),
        ]
    if cfg.noise_prob > 0:
        t.append(RandGaussianNoised("image", prob=cfg.noise_prob, std=cfg.noise_std))
    if cfg.contrast_prob > 0:
        t.append(RandAdjustContrastd("image", prob=cfg.contrast_prob, gamma=cfg.contrast_gamma))
    return Compose(t) if t else None


def augment_slice(
    augment: Compose | None, image: np.ndarray, instances: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `augment` to image (C, H, W) float32 and instances (H, W) with a per-sample seed (reproducible, resumable)."""
    if augment is None:
        return image, instances
    augment.set_random_state(seed=seed % (2**32))
    out = augment({"image": image, "instances": instances[None].astype(np.float32)})
    img = np.asarray(out["image"], dtype=np.float32)
    ids = np.rint(np.asarray(out["instances"])[0]).astype(instances.dtype)
    return np.clip(img, 0.0, 1.0), ids
