"""Convert an instance label slice into torchvision's Mask R-CNN target dict."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def instances_to_target(instances: np.ndarray, classes: Mapping[int, int], min_pixels: int = 1) -> dict[str, torch.Tensor]:
    """Target for one 2D slice.

    Args:
        instances: (y, x) integer instance ids, 0 = background.
        classes: instance id -> class id (1..N).
        min_pixels: instances with fewer pixels on this slice are dropped.
    Returns:
        boxes: FloatTensor[N, 4] xyxy px (x2/y2 exclusive edges), labels: Int64Tensor[N], masks: UInt8Tensor[N, H, W].
    """
    ids, counts = np.unique(instances, return_counts=True)
    keep = [int(i) for i, c in zip(ids, counts) if i != 0 and c >= min_pixels and int(i) in classes]
    h, w = instances.shape
    if not keep:
        return {
            "boxes": torch.zeros((0, 4), dtype=torch.float32),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "masks": torch.zeros((0, h, w), dtype=torch.uint8),
        }
    masks = np.stack([instances == i for i in keep]).astype(np.uint8)
    boxes = np.zeros((len(keep), 4), dtype=np.float32)
    for n, m in enumerate(masks):
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        boxes[n] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.tensor([classes[i] for i in keep], dtype=torch.int64),
        "masks": torch.from_numpy(masks),
    }
