"""In-plane resampling of slices to the pixel size a network was trained at (batched torch, on any device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def inplane_size(shape_yx: tuple[int, int], spacing_yx: tuple[float, float], target_mm: float | None
                 ) -> tuple[int, int]:
    """(y, x) pixel count after resampling from `spacing_yx` mm pixels to `target_mm` (None keeps the size).

    The field of view is kept: n' = round(n * spacing / target), at least 1.
    """
    if target_mm is None:
        return (int(shape_yx[0]), int(shape_yx[1]))
    return tuple(max(1, int(round(n * s / target_mm))) for n, s in zip(shape_yx, spacing_yx))  # type: ignore[return-value]


def resize_slices(images: torch.Tensor, size_yx: tuple[int, int]) -> torch.Tensor:
    """FloatTensor[B, C, H, W] -> [B, C, size_yx]: bilinear, anti-aliased when shrinking, pixel edges aligned.

    Pixel edges map to pixel edges (align_corners=False), so a position p px in the input is p * size / H px in
    the output: boxes scale back by the inverse ratio.
    """
    if tuple(images.shape[-2:]) == tuple(size_yx):
        return images
    shrink = size_yx[0] < images.shape[-2] or size_yx[1] < images.shape[-1]
    return F.interpolate(images, size=tuple(size_yx), mode="bilinear", align_corners=False, antialias=shrink)
