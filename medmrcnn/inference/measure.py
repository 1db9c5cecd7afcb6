"""Per-instance measurements in patient units: volume, centroid, extent, longest axial diameter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from medmrcnn.inference.result import InstanceRecord
from medmrcnn.labels import LabelMap
from medmrcnn.volume import Volume


def longest_diameter_mm(mask: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Longest distance in mm across a (y, x) bool mask, measured between pixel edges (outer corners)."""
    edge = mask & ~ndimage.binary_erosion(mask)
    ys, xs = np.nonzero(edge)
    if not len(ys):
        return 0.0
    corners = np.concatenate([np.stack([ys + dy, xs + dx], axis=1) for dy in (0, 1) for dx in (0, 1)])
    pts = np.unique(corners, axis=0) * np.asarray(spacing_yx, dtype=np.float64)
    if len(pts) > 3:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear corners cannot happen for pixels, but keep the exact fallback
            pass
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def measure_instances(
    instance_map: np.ndarray,
    boxes: Sequence[tuple[slice, ...]],
    class_ids: Sequence[int],
    scores: Sequence[Sequence[float]],
    volume: Volume,
    labels: LabelMap,
) -> list[InstanceRecord]:
    """One InstanceRecord per instance id k + 1 of `instance_map`, whose bounding box is boxes[k].

    Args:
        instance_map: (z, y, x) ids 1..M, on the grid of `volume`.
        boxes: per instance, the slices of its bounding box (as scipy.ndimage.find_objects gives).
        class_ids: per instance, its class id in `labels`.
        scores: per instance, the detection scores of the slices it was found on.
        volume: gives spacing and the affine to patient LPS mm.
        labels: class names.
    """
    sz, sy, sx = volume.spacing
    records = []
    for k, (sl, cid, sc) in enumerate(zip(boxes, class_ids, scores), start=1):
        mask = instance_map[sl] == k
        offset = np.array([s.start for s in sl], dtype=np.float64)
        centroid_zyx = np.array(ndimage.center_of_mass(mask)) + offset
        diameter = max(longest_diameter_mm(m, (sy, sx)) for m in mask if m.any())
        count = int(np.count_nonzero(mask))
        records.append(InstanceRecord(
            id=k, class_id=int(cid), class_name=labels.name_of(int(cid)),
            score_max=float(np.max(sc)), score_mean=float(np.mean(sc)),
            voxel_count=count, volume_ml=count * volume.voxel_volume_ml,
            centroid_mm=tuple(float(v) for v in volume.index_to_patient(centroid_zyx)),  # type: ignore[arg-type]
            bbox=(sl[0].start, sl[1].start, sl[2].start, sl[0].stop, sl[1].stop, sl[2].stop),
            slice_range=(sl[0].start, sl[0].stop - 1),
            longest_diameter_mm=diameter,
        ))
    return records
