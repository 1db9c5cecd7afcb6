"""Raw network detections -> compact `SliceInstances` on the original slice grid."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from medmrcnn.inference.detector import RawDetections
from medmrcnn.structures import SliceInstances


def paste_mask(mask_prob: torch.Tensor, box: torch.Tensor, image_size: tuple[int, int], threshold: float
               ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Threshold an M x M box-relative mask on the pixels of an image of (height, width).

    `box` is xyxy px (float, exclusive x1/y1) in that image. The grid is sampled bilinearly at pixel centres
    (zero outside the box, so the edge fades as in torchvision's paste). Returns the tight integer box
    (x0, y0, x1, y1) and the bool crop, or None when no pixel reaches `threshold`.
    """
    m = mask_prob.shape[-1]
    h, w = image_size
    bx0, by0, bx1, by1 = (float(v) for v in box)
    bw, bh = max(bx1 - bx0, 1e-6), max(by1 - by0, 1e-6)
    # One mask cell of margin: with a threshold below 0.5 pixels just outside the box can pass.
    x0, x1 = max(math.floor(bx0 - bw / m), 0), min(math.ceil(bx1 + bw / m), w)
    y0, y1 = max(math.floor(by0 - bh / m), 0), min(math.ceil(by1 + bh / m), h)
    if x1 <= x0 or y1 <= y0:
        return None
    gx = 2 * (torch.arange(x0, x1, dtype=torch.float32) + 0.5 - bx0) / bw - 1
    gy = 2 * (torch.arange(y0, y1, dtype=torch.float32) + 0.5 - by0) / bh - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]
    prob = F.grid_sample(mask_prob[None, None].float(), grid, align_corners=False)[0, 0]
    crop = (prob >= threshold).numpy()
    rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    if not len(rows):
        return None
    crop = crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1), crop


def to_slice_instances(
    det: RawDetections,
    image_size: tuple[int, int],
    scale_xy: tuple[float, float] = (1.0, 1.0),
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    duplicate_overlap: float = 0.5,
    class_thresholds: Mapping[int, tuple[float, float]] | None = None,
) -> SliceInstances:
    """Keep detections scoring >= `score_threshold` and paste their masks onto the original slice grid.

    Args:
        det: detections in the network's grid (CPU or GPU; moved to the CPU here, they are small).
        image_size: (height, width) of the original slice.
        scale_xy: original pixels per network pixel along x and y (1 when the slice was not resampled).
        score_threshold, mask_threshold, duplicate_overlap: see PredictorConfig.
        class_thresholds: class id -> (score, mask) threshold replacing the two above for that class.
    Returns:
        compact instances, highest score first; detections whose mask is empty after thresholding, and duplicates
        (`remove_duplicates`), are dropped.
    """
    table = dict(class_thresholds or {})
    labels_cpu = det.labels.to("cpu")
    score_min = torch.tensor([table.get(int(c), (score_threshold, mask_threshold))[0] for c in labels_cpu],
                             dtype=torch.float32)
    keep = torch.nonzero(det.scores.to("cpu", torch.float32) >= score_min).flatten()
    det = det.to("cpu").select(keep)
    order = torch.sort(det.scores, descending=True, stable=True).indices
    det = det.select(order)
    scale = torch.tensor([scale_xy[0], scale_xy[1], scale_xy[0], scale_xy[1]], dtype=torch.float32)
    boxes, scores, labels, masks = [], [], [], []
    for i in range(len(det)):
        pasted = paste_mask(det.mask_probs[i], det.boxes[i] * scale, image_size,
                            table.get(int(det.labels[i]), (score_threshold, mask_threshold))[1])
        if pasted is None:
            continue
        boxes.append(pasted[0])
        masks.append(pasted[1])
        scores.append(float(det.scores[i]))
        labels.append(int(det.labels[i]))
    found = SliceInstances(image_size, np.array(boxes, dtype=np.int64).reshape(-1, 4), scores, labels, masks)
    return remove_duplicates(found, duplicate_overlap)


def remove_duplicates(instances: SliceInstances, overlap: float) -> SliceInstances:
    """Drop detections whose mask lies at least `overlap` (intersection / own area) inside a higher-scoring mask
    of the same class on the same slice.

    The network's box NMS keeps part-object duplicates (a box around half a kidney has a low IoU with the box
    around all of it); on adjacent slices such duplicates would form parallel chains, i.e. one organ reported as
    several. Masks that only touch share no pixel and are kept. `instances` must be sorted by descending score.
    """
    if len(instances) < 2:
        return instances
    i, j, inter = instances.overlaps(instances)  # sparse: a whole-slide image holds tens of thousands of cells
    area = np.maximum(instances.area(), 1)
    inside = (i != j) & (inter / area[i] >= overlap) & (instances.labels[i] == instances.labels[j])
    within: dict[int, list[int]] = {}  # mask i lies within each of within[i]
    for a, b in zip(i[inside].tolist(), j[inside].tolist()):
        within.setdefault(a, []).append(b)
    kept = np.zeros(len(instances), dtype=bool)
    for a in range(len(instances)):
        kept[a] = not any(kept[b] for b in within.get(a, ()))
    keep = np.flatnonzero(kept)
    return instances[keep] if len(keep) < len(instances) else instances
