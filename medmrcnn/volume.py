"""`Volume`: the voxel array, its geometry and where it came from (see docs/data-contract.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medmrcnn.geometry.axes import spacing_zyx


def affine_from_geometry(
    spacing_xyz: tuple[float, float, float] | np.ndarray,
    origin: tuple[float, float, float] | np.ndarray,
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """Build the 4x4 LPS affine from ITK-style spacing (x, y, z), origin (mm) and 3x3 direction (columns = axes)."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = d * np.asarray(spacing_xyz, dtype=np.float64)[None, :]
    a[:3, 3] = np.asarray(origin, dtype=np.float64)
    return a


@dataclass
class Volume:
    """A 3D image on the data contract.

    Attributes:
        array: voxels, shape (z, y, x); a 2D image is a volume with z == 1. CT is in Hounsfield units.
        affine: float64[4, 4] mapping voxel index (i, j, k, 1) = (x, y, z, 1) to patient LPS millimetres.
        modality: DICOM-style modality ("CT", "MR", "SM" for microscopy, "OT" when unknown).
        source: the path the volume was read from ("" when made in memory).
        series_uid: SeriesInstanceUID for DICOM sources, else "".
        source_datasets: DICOM headers (pixel data removed) of the source instances in slice order
            (one per slice for classic series, one multi-frame dataset for enhanced objects); empty otherwise.
        warnings: human-readable notes found while loading (gaps, non-uniform spacing, ...).
        metadata: anything else worth keeping (series description, photometric interpretation, ...).
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    modality: str = "OT"
    source: str = ""
    series_uid: str = ""
    source_datasets: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 2:
            self.array = self.array[None]
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be (z, y, x); got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4; got {self.affine.shape}")
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        # relative test: 0.1 µm microscopy voxels have a determinant of 1e-12 mm^3 yet are not singular
        if not np.all(norms > 0) or abs(np.linalg.det(self.affine[:3, :3])) < 1e-9 * float(np.prod(norms)):
            raise ValueError("Volume.affine is singular")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) voxel counts."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm in array order (z, y, x); z is the distance between slice planes (also when tilted)."""
        return spacing_zyx(self.affine)

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        """Voxel size in mm in ITK order (x, y, z)."""
        return tuple(reversed(self.spacing))  # type: ignore[return-value]

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position in mm of the centre of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3x3 direction cosines; column c is the LPS direction of index axis c (x, y, z)."""
        return self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)[None, :]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    @property
    def is_2d(self) -> bool:
        """True for a single-slice image (microscopy, a lone radiograph)."""
        return self.array.shape[0] == 1

    def index_to_patient(self, zyx: np.ndarray) -> np.ndarray:
        """Map voxel indices given as (..., 3) in (z, y, x) order to LPS mm, shape (..., 3)."""
        zyx = np.asarray(zyx, dtype=np.float64)
        ijk = zyx[..., ::-1]
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume with the same geometry and provenance but another voxel array of the same (z, y, x) shape."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"with_array: shape {array.shape} differs from {self.array.shape}")
        return Volume(
            array=array, affine=self.affine.copy(), modality=self.modality, source=self.source,
            series_uid=self.series_uid, source_datasets=self.source_datasets,
            warnings=list(self.warnings), metadata=dict(self.metadata),
        )
