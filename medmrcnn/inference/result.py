"""`VolumeResult` and `InstanceRecord`: what a prediction returns, in the input's geometry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medmrcnn.labels import LabelMap
from medmrcnn.volume import Volume


@dataclass
class InstanceRecord:
    """One 3D instance and its measurements (docs/outputs.md).

    Attributes:
        id: value of the instance in `VolumeResult.instance_map` (1..M).
        class_id: class in `VolumeResult.labels` (1..N); class_name: its name.
        score_max, score_mean: highest and mean detection score over the slices it was found on.
        voxel_count: voxels it owns in the instance map (after overlaps were resolved).
        volume_ml: voxel_count times the voxel volume, in millilitres.
        centroid_mm: centre of mass in patient LPS millimetres (x, y, z).
        bbox: (z0, y0, x0, z1, y1, x1) voxel indices, end exclusive (array[z0:z1, y0:y1, x0:x1] holds it).
        slice_range: (first, last) slice index, both inclusive.
        longest_diameter_mm: the longest in-plane (axial) diameter over its slices, measured between pixel
            edges (as a caliper would), in millimetres.
        wall_thickness_mm: for classes the predictor was told are walls (PredictorConfig.wall_classes), the
            median in-plane wall thickness in millimetres (measure.wall_thickness_mm); None otherwise.
    """

    id: int
    class_id: int
    class_name: str
    score_max: float
    score_mean: float
    voxel_count: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    bbox: tuple[int, int, int, int, int, int]
    slice_range: tuple[int, int]
    longest_diameter_mm: float
    wall_thickness_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class VolumeResult:
    """The prediction for one volume, on the input's voxel grid.

    Attributes:
        volume: the input volume (geometry and provenance; the voxels are not copied).
        instance_map: uint16 (z, y, x), uint32 when there are more than 65535 instances; 0 = background.
        class_map: uint8 (z, y, x), uint16 beyond 255 classes; 0 = background. Where instances overlapped on a
            slice the voxel went to the higher-scoring one, so class_map is exactly the class of instance_map.
        instances: one record per instance id, in id order.
        labels: the class names of the model.
        metadata: provenance: predictor and model config, slices run/skipped, timings in seconds.
    """

    volume: Volume
    instance_map: np.ndarray
    class_map: np.ndarray
    instances: list[InstanceRecord]
    labels: LabelMap
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.instance_map.shape != self.volume.shape or self.class_map.shape != self.volume.shape:
            raise ValueError(
                f"VolumeResult: maps {self.instance_map.shape}/{self.class_map.shape} differ from the volume "
                f"{self.volume.shape}"
            )

    @property
    def num_instances(self) -> int:
        """Number of 3D instances."""
        return len(self.instances)

    def with_classes(self, class_ids: list[int] | tuple[int, ...]) -> "VolumeResult":
        """The same result holding only the instances of the given class ids (ids and records unchanged)."""
        keep = [r for r in self.instances if r.class_id in class_ids]
        inside = np.isin(self.class_map, list(class_ids))
        return VolumeResult(self.volume, np.where(inside, self.instance_map, 0).astype(self.instance_map.dtype),
                            np.where(inside, self.class_map, 0).astype(self.class_map.dtype), keep, self.labels,
                            dict(self.metadata))

    def instances_of(self, class_name: str) -> list[InstanceRecord]:
        """The instances of one class."""
        cid = self.labels.id_of(class_name)
        return [r for r in self.instances if r.class_id == cid]
