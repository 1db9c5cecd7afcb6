"""Turn label maps into the segments of a DICOM-SEG: which segments, in which order, and a segment-number map.

A "segment-number map" is a (z, y, x) unsigned array whose value at a voxel is the number (1..N) of the segment the
voxel belongs to, 0 for none: highdicom's fast label-map input. Segments never overlap because they come from label
maps (one class or instance per voxel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medmrcnn.dicomseg.concepts import LabelConfig, SegmentConcept
from medmrcnn.errors import ExportError, LabelConfigError
from medmrcnn.labels import LabelMap

# Few distinct labels: one vectorised comparison per label is faster than a histogram, which first casts every voxel
# to a 64-bit index.
_COMPARE_LIMIT = 32
_CHUNK_VOXELS = 1 << 23


@dataclass(frozen=True)
class SegmentSpec:
    """One segment to write: number (1..N), label shown by viewers, coded concept, optional tracking identifier."""

    number: int
    label: str
    concept: SegmentConcept
    tracking_id: str | None = None
    description: str | None = None


@dataclass
class SegmentPlan:
    """Segment-number map (z, y, x) uint8/uint16 plus the description of segments 1..N in order."""

    array: np.ndarray
    segments: list[SegmentSpec]


def foreground_slab(label_map: np.ndarray) -> slice:
    """The z range holding every non-zero voxel (empty slice when there is none)."""
    nonempty = np.flatnonzero(label_map.reshape(label_map.shape[0], -1).any(axis=1))
    return slice(int(nonempty[0]), int(nonempty[-1]) + 1) if len(nonempty) else slice(0, 0)


def present_labels(label_map: np.ndarray) -> np.ndarray:
    """Sorted non-zero values present in an integer label map (z, y, x)."""
    if label_map.dtype.kind not in "ui":
        raise LabelConfigError(f"label map must hold integers; got dtype {label_map.dtype}")
    slab = label_map[foreground_slab(label_map)]
    if slab.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(slab.min()), int(slab.max())
    if lo < 0:
        raise LabelConfigError(f"label map holds negative values (min {lo}); labels are 0 (background) or 1..N")
    if hi <= _COMPARE_LIMIT:
        return np.array([v for v in range(1, hi + 1) if (slab == v).any()], dtype=np.int64)
    flat = slab.reshape(-1)
    counts = np.zeros(hi + 1, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK_VOXELS):  # bounded memory for the int64 cast bincount makes
        counts += np.bincount(flat[start : start + _CHUNK_VOXELS], minlength=hi + 1)
    return np.flatnonzero(counts[1:]) + 1


def _number_map(label_map: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map label values[i] -> segment number i + 1 (others -> 0) with one look-up table pass over the foreground."""
    dtype = np.uint8 if len(values) < 256 else np.uint16
    if label_map.dtype == dtype and np.array_equal(values, np.arange(1, len(values) + 1)):
        return label_map  # already segment numbers: no copy
    lut = np.zeros(int(values.max()) + 1, dtype=dtype)
    lut[values] = np.arange(1, len(values) + 1, dtype=dtype)
    out = np.zeros(label_map.shape, dtype=dtype)
    slab = foreground_slab(label_map)
    out[slab] = lut[label_map[slab]]
    return out


def class_segments(class_map: np.ndarray, labels: LabelMap, config: LabelConfig) -> SegmentPlan:
    """One segment per class present in `class_map` (ids of `labels`), in class-id order."""
    present = present_labels(class_map)
    if len(present) and present[-1] > len(labels.names):
        raise LabelConfigError(
            f"label map holds value {int(present[-1])} but only {len(labels.names)} class names are given "
            f"({list(labels.names)}); name every label value"
        )
    names = [labels.name_of(int(v)) for v in present]
    specs = [SegmentSpec(number=i + 1, label=name, concept=config.concept_for(name)) for i, name in enumerate(names)]
    return SegmentPlan(array=_number_map(class_map, present) if specs else class_map, segments=specs)


def instance_segments(
    instance_map: np.ndarray,
    instance_classes: Mapping[int, str],
    class_order: Sequence[str],
    config: LabelConfig,
    descriptions: Mapping[int, str] | None = None,
) -> SegmentPlan:
    """One segment per instance present in `instance_map`, ordered by class (as in `class_order`) then instance id.

    Each segment is labelled and tracked as "<class> <instance id>" (the id medmrcnn's reports use); the writer
    gives each a new TrackingUID.
    """
    present = [int(i) for i in present_labels(instance_map)]
    missing = [i for i in present if i not in instance_classes]
    if missing:
        raise ExportError(f"instances {missing[:10]} of the instance map have no class (no instance record)")
    rank = {name: r for r, name in enumerate(class_order)}
    order = sorted(present, key=lambda i: (rank.get(instance_classes[i], len(rank)), i))
    specs = [
        SegmentSpec(number=n + 1, label=f"{instance_classes[i]} {i}", concept=config.concept_for(instance_classes[i]),
                    tracking_id=f"{instance_classes[i]} {i}", description=(descriptions or {}).get(i))
        for n, i in enumerate(order)
    ]
    array = _number_map(instance_map, np.asarray(order, dtype=np.int64)) if specs else instance_map
    return SegmentPlan(array=array, segments=specs)


def connected_instances(class_map: np.ndarray, labels: LabelMap) -> tuple[np.ndarray, dict[int, str]]:
    """Split a class label map into instances: 3D connected components (26-neighbourhood) of each class.

    Returns:
        instance map uint32 (z, y, x) with ids 1..M numbered class by class, and instance id -> class name.
    """
    instances = np.zeros(class_map.shape, dtype=np.uint32)
    classes: dict[int, str] = {}
    structure = np.ones((3, 3, 3), dtype=bool)
    next_id = 1
    # find_objects gives each class's bounding box in one pass, so labelling only touches that box.
    for class_id, box in enumerate(ndimage.find_objects(class_map), start=1):
        if box is None:
            continue
        components, n = ndimage.label(class_map[box] == class_id, structure=structure)
        inside = components > 0
        instances[box][inside] = components[inside] + (next_id - 1)
        name = labels.name_of(class_id)
        classes.update({i: name for i in range(next_id, next_id + n)})
        next_id += n
    return instances, classes
