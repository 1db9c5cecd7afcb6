"""Bring an annotated volume to the network's input: intensity preset, then in-plane resampling to its pixel size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medmrcnn.errors import DataError
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.training.items import AnnotatedVolume
from medmrcnn.transforms import normalise_volume
from medmrcnn.transforms.resample import inplane_size, resize_slices


@dataclass
class PreparedVolume:
    """An item ready for slicing: image in [0, 1] and instances on the network's pixel grid.

    Attributes:
        image: float16 (z, y', x') normalised intensities (float16 halves the cache; the net sees float32).
        instances: uint16/int32 (z, y', x') instance ids resampled with nearest neighbour.
        classes: instance id -> class id (1..N).
        pixel_spacing_mm: (y, x) pixel size of the prepared grid in mm.
        name: source description.
    """

    image: np.ndarray
    instances: np.ndarray
    classes: dict[int, int]
    pixel_spacing_mm: tuple[float, float]
    name: str


def resample_slices(image: np.ndarray, instances: np.ndarray, size_yx: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize every (y, x) slice to `size_yx`: the image as the predictor does (resize_slices), ids nearest neighbour."""
    if image.shape[1:] == tuple(size_yx):
        return image, instances
    img = resize_slices(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None], size_yx)[:, 0].numpy()
    ids = F.interpolate(torch.from_numpy(instances.astype(np.float32))[:, None], size=size_yx, mode="nearest-exact")
    return img, ids[:, 0].numpy().astype(instances.dtype)


def prepare_volume(item: AnnotatedVolume, cfg: ModelConfig) -> PreparedVolume:
    """Normalise with cfg.intensity and resample in-plane to cfg.pixel_spacing_mm; check image/label agreement."""
    if item.gt_instances.shape != item.volume.shape:
        raise DataError(f"{item.name}: label shape {item.gt_instances.shape} differs from image shape {item.volume.shape}")
    image = normalise_volume(item.volume, cfg.intensity)
    _, sy, sx = item.volume.spacing
    size = inplane_size(item.volume.shape[1:], (sy, sx), cfg.pixel_spacing_mm)
    # Ids stay exact through float32 interpolation (nearest) up to 2**24.
    dtype = np.uint16 if item.gt_instances.max(initial=0) < 65536 else np.int32
    image, instances = resample_slices(image, item.gt_instances.astype(dtype, copy=False), size)
    spacing = (sy, sx) if cfg.pixel_spacing_mm is None else (cfg.pixel_spacing_mm, cfg.pixel_spacing_mm)
    return PreparedVolume(image.astype(np.float16), instances, dict(item.gt_classes), spacing, item.name)
