"""`SeriesInfo`: what `scan` found for one loadable unit (a DICOM series, a multi-frame object or an image file)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.errors import VolumeLoadError

# Kinds of entries `scan` reports; "dicom-non-image" entries (SEG, SR, RTSTRUCT, PR, ...) are listed, never loaded.
DICOM_SERIES, DICOM_MULTIFRAME, DICOM_NON_IMAGE = "dicom", "dicom-multiframe", "dicom-non-image"
NIFTI, ITK, RASTER = "nifti", "itk", "raster"

# Beyond these a header is corrupt or hostile (16k x 16k in-plane, 2^31 voxels = 4-8 GiB of int16/float32).
MAX_IN_PLANE = 16384
MAX_VOXELS = 2**31


@dataclass
class SeriesInfo:
    """Header-level description of one image series; `scan` fills it without decoding pixel data.

    Attributes:
        kind: "dicom" (single-frame files), "dicom-multiframe" (one enhanced/multi-frame file),
            "dicom-non-image" (SEG/SR/RTSTRUCT/PR/... listed but skipped), "nifti", "itk" (NRRD/MHA/MHD), "raster".
        paths: the files of the series (slice order for DICOM when it could be determined).
        series_uid: SeriesInstanceUID for DICOM, else "".
        modality: DICOM modality ("CT", "MR", ...); "OT" when unknown, "SM" for PNG/TIFF tiles.
        shape: (z, y, x) of the volume `load_volume` would return, None when it cannot be built.
        spacing: (z, y, x) mm, None when unknown.
        orientation: axis codes in LPS "to" convention ("LPS" = x toward Left, y toward Posterior, z toward
            Superior: a standard axial stack); "" when unknown.
        description: SeriesDescription (DICOM) or the file name.
        n_files: number of files.
        warnings: notes a reader should see (tilt, skipped objects, missing geometry, ...).
        error: why the series cannot be loaded (mixed sizes, duplicate positions, ...); None when loadable.
        irregular: why slice spacing is irregular (gaps / non-uniform); loadable only with `allow_irregular=True`.
        affine: the data-contract affine `load_volume` would give (LPS mm), None when unknown.
        number: SeriesNumber for DICOM (None otherwise); used to order the listing.
        n_volumes: 3D volumes in the file (4D NIfTI/NRRD, multi-page TIFF); more than one needs `frame=`.
        subseries: which stack of a SeriesInstanceUID holding several ("echo 2", "plane 1/3", ...); "" when the
            series is one stack.
    """

    kind: str
    paths: list[Path]
    series_uid: str = ""
    modality: str = "OT"
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str = ""
    description: str = ""
    n_files: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    irregular: str | None = None
    affine: np.ndarray | None = None
    number: int | None = None
    n_volumes: int = 1
    subseries: str = ""
    plan: Any = field(default=None, repr=False, compare=False)  # reader-specific loading plan (headers, order)

    @property
    def is_image(self) -> bool:
        """True for entries `load_volume` can be asked for (everything except non-image DICOM objects)."""
        return self.kind != DICOM_NON_IMAGE

    @property
    def source(self) -> Path:
        """A path naming the series in messages: its folder for multi-file DICOM series (the folder holding all of
        them when they lie in sibling folders), else its file."""
        if self.kind == DICOM_SERIES and len(self.paths) > 1:
            parents = {p.parent for p in self.paths}
            return self.paths[0].parent if len(parents) == 1 else Path(os.path.commonpath([str(p) for p in parents]))
        return self.paths[0]

    def summary(self) -> str:
        """One line: modality, shape, files, UID or file name, description."""
        shape = "x".join(str(s) for s in self.shape) if self.shape else "?"
        name = self.series_uid or self.paths[0].name
        desc = f" '{self.description}'" if self.description and self.description != self.paths[0].name else ""
        sub = f" [{self.subseries}]" if self.subseries else ""
        return f"{self.modality} {shape} ({self.n_files} file{'s' if self.n_files != 1 else ''}) {name}{sub}{desc}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (paths as strings, affine as nested lists)."""
        return {
            "kind": self.kind, "series_uid": self.series_uid, "modality": self.modality,
            "shape": list(self.shape) if self.shape else None, "spacing": list(self.spacing) if self.spacing else None,
            "orientation": self.orientation, "description": self.description, "n_files": self.n_files,
            "series_number": self.number, "subseries": self.subseries, "n_volumes": self.n_volumes, "warnings": list(self.warnings),
            "error": self.error, "irregular": self.irregular,
            "affine": self.affine.tolist() if self.affine is not None else None, "paths": [str(p) for p in self.paths],
        }


def one_line(error: BaseException, limit: int = 300) -> str:
    """`Type: message` of an exception from a third-party reader, on one line and at most `limit` characters."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_dimensions(path: str | Path, shape: tuple[int, ...]) -> None:
    """Raise VolumeLoadError for empty or absurd (z, y, x) sizes before any pixel buffer is allocated."""
    if any(int(s) <= 0 for s in shape):
        raise VolumeLoadError(path, f"absurd dimensions {'x'.join(str(int(s)) for s in shape)} (a size is zero)")
    if any(int(s) > MAX_IN_PLANE for s in shape[-2:]) or int(np.prod([int(s) for s in shape])) > MAX_VOXELS:
        raise VolumeLoadError(
            path, f"absurd dimensions {'x'.join(str(int(s)) for s in shape)} (limits: {MAX_IN_PLANE} per in-plane "
            f"axis, {MAX_VOXELS} voxels); the header is probably corrupt"
        )


def check_spacing(path: str | Path, spacing: tuple[float, ...] | np.ndarray) -> None:
    """Raise VolumeLoadError for zero, negative or non-finite voxel sizes."""
    s = np.asarray(spacing, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise VolumeLoadError(path, f"invalid voxel spacing {tuple(float(v) for v in s)} mm")
