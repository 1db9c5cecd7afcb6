"""Per-instance measurements in patient units: volume, centroid, extent, longest axial diameter, wall thickness."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.morphology import skeletonize

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


def wall_thickness_mm(mask: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Median in-plane thickness in mm of a wall, ring or ribbon given as a (z, y, x) bool mask.

    On each slice the wall's medial axis (skeleton) is found; at each medial pixel twice the distance to the
    nearest background pixel centre, less half a pixel (the edge lies half a pixel before that centre, on one
    side exactly and on the other on average), is the local thickness. The median over all medial pixels of all
    slices is robust to the ends of a ribbon. 0.0 for an empty mask.
    """
    values = []
    pixel = float(np.mean(spacing_yx))
    for m in mask:
        if not m.any():
            continue
        padded = np.pad(m, 1)  # a wall touching the crop's edge still has background beyond it
        dist = ndimage.distance_transform_edt(padded, sampling=spacing_yx)
        values.append(2 * dist[skeletonize(padded)] - pixel / 2)
    return float(np.median(np.concatenate(values))) if values else 0.0


def measure_instances(
    instance_map: np.ndarray,
    boxes: Sequence[tuple[slice, ...]],
    class_ids: Sequence[int],
    scores: Sequence[Sequence[float]],
    volume: Volume,
    labels: LabelMap,
    wall_class_ids: Collection[int] = (),
) -> list[InstanceRecord]:
    """One InstanceRecord per instance id k + 1 of `instance_map`, whose bounding box is boxes[k].

    Args:
        instance_map: (z, y, x) ids 1..M, on the grid of `volume`.
        boxes: per instance, the slices of its bounding box (as scipy.ndimage.find_objects gives).
        class_ids: per instance, its class id in `labels`.
        scores: per instance, the detection scores of the slices it was found on.
        volume: gives spacing and the affine to patient LPS mm.
        labels: class names.
        wall_class_ids: classes that are walls (myocardium, bladder wall, cortex, a lesion's rim); their
            instances get `wall_thickness_mm`.
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
            wall_thickness_mm=wall_thickness_mm(mask, (sy, sx)) if int(cid) in wall_class_ids else None,
        ))
    return records
