"""Painting linked 3D instances into instance and class label maps on the original grid.

Every step works on each instance's own bounding box: no temporary as large as the volume is made, so a
512 x 512 x 300 result costs only its two label maps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medmrcnn.inference.config import PredictorConfig
from medmrcnn.inference.linking import CellShape, LinkedInstance, link_instances_across_slices
from medmrcnn.inference.measure import measure_instances
from medmrcnn.inference.result import VolumeResult
from medmrcnn.labels import LabelMap
from medmrcnn.structures import SliceInstances
from medmrcnn.volume import Volume


def instance_dtype(n: int) -> np.dtype:
    """uint16 for up to 65535 instances, else uint32."""
    return np.dtype(np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32)


def class_dtype(num_labels: int) -> np.dtype:
    """uint8 for up to 255 classes, else uint16."""
    return np.dtype(np.uint8 if num_labels <= np.iinfo(np.uint8).max else np.uint16)


def paint_instances(
    slices: Sequence[SliceInstances], linked: Sequence[LinkedInstance], shape: tuple[int, int, int]
) -> np.ndarray:
    """(z, y, x) map with instance k + 1 where linked[k]'s masks are.

    Where masks of different instances overlap on a slice, the voxel goes to the higher detection score
    (equal scores: the lower id).
    """
    out = np.zeros(shape, dtype=instance_dtype(len(linked)))
    per_slice: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    for k, inst in enumerate(linked, start=1):
        for (z, i), score in zip(inst.members, inst.scores):
            per_slice[z].append((score, -k, i))
    for z, items in per_slice.items():
        s = slices[z]
        for _, neg_id, i in sorted(items):  # ascending score: the best detection is painted last and wins
            x0, y0, x1, y1 = s.boxes[i]
            out[z, y0:y1, x0:x1][s.masks[i]] = -neg_id
    return out


def remove_small_and_renumber(
    instance_map: np.ndarray, n: int, min_voxels: int = 0, min_volume_mm3: float = 0.0, voxel_volume_mm3: float = 1.0
) -> tuple[list[tuple[slice, ...]], list[int]]:
    """In place: erase instances 1..n smaller than either limit and renumber the rest 1..M in id order.

    Sizes are counted on the map itself, i.e. after overlaps were resolved. Returns the bounding-box slices of
    the kept instances (in new id order) and their old ids.
    """
    boxes, old_ids = [], []
    for old, sl in enumerate(ndimage.find_objects(instance_map, max_label=n), start=1):
        if sl is None:
            continue
        crop = instance_map[sl]
        mine = crop == old
        count = int(np.count_nonzero(mine))
        if count < min_voxels or count * voxel_volume_mm3 < min_volume_mm3:
            crop[mine] = 0
            continue
        # Ids between the kept count and `old` are unused by now, so the new id cannot collide.
        new = len(old_ids) + 1
        if new != old:
            crop[mine] = new
        boxes.append(sl)
        old_ids.append(old)
    return boxes, old_ids


def paint_class_map(instance_map: np.ndarray, boxes: Sequence[tuple[slice, ...]], class_ids: Sequence[int],
                    num_labels: int) -> np.ndarray:
    """(z, y, x) class map: class_ids[k] where instance_map == k + 1 (boxes[k] its bounding box)."""
    out = np.zeros(instance_map.shape, dtype=class_dtype(num_labels))
    for k, (sl, cid) in enumerate(zip(boxes, class_ids), start=1):
        out[sl][instance_map[sl] == k] = cid
    return out


def assemble_result(volume: Volume, slices: Sequence[SliceInstances], labels: LabelMap, cfg: PredictorConfig
                    ) -> VolumeResult:
    """Link per-slice instances (one SliceInstances per slice of `volume`) into a VolumeResult on its grid.

    link (cfg.link_*, cfg.join_branches, cfg.cell_*, size limits) -> paint by score -> drop what overlaps shrank below the
    size limits -> renumber 1..M -> class map -> measurements.
    """
    voxel_mm3 = volume.voxel_volume_ml * 1000.0
    cells = cfg.cell_linking if cfg.cell_linking is not None else volume.modality == "SM"
    shape = CellShape((volume.spacing[1], volume.spacing[2]), cfg.cell_max_elongation, cfg.cell_neck_ratio)
    linked = link_instances_across_slices(
        slices, metric=cfg.link_metric, threshold=cfg.link_threshold, join_branches=cfg.join_branches and not cells,
        min_voxels=cfg.min_voxels, min_volume_mm3=cfg.min_volume_mm3, voxel_volume_mm3=voxel_mm3,
        max_gap_mm=0.0 if cells else cfg.link_gap_mm, slice_spacing_mm=volume.spacing[0],
        cell_shape=shape if cells else None,
    )
    instance_map = paint_instances(slices, linked, volume.shape)
    boxes, old_ids = remove_small_and_renumber(instance_map, len(linked), cfg.min_voxels, cfg.min_volume_mm3,
                                               voxel_mm3)
    if instance_dtype(len(old_ids)) != instance_map.dtype:
        instance_map = instance_map.astype(instance_dtype(len(old_ids)))
    kept = [linked[i - 1] for i in old_ids]
    class_ids = [inst.class_id for inst in kept]
    class_map = paint_class_map(instance_map, boxes, class_ids, len(labels.names))
    walls = {labels.id_of(name) for name in cfg.wall_classes}
    records = measure_instances(instance_map, boxes, class_ids, [inst.scores for inst in kept], volume, labels,
                                walls)
    return VolumeResult(volume, instance_map, class_map, records, labels, {"predictor": cfg.to_dict()})
