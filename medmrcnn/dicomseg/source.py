"""The reference series as highdicom needs it: source headers and the segment array in their frame order.

highdicom pairs `pixel_array[i]` with source image i (classic series) or source frame i + 1 (one multi-frame object).
Our arrays are in the reference Volume's slice order, so each source plane is paired with a slice by its own position
(its rank along the Volume's slice axis), whatever order the files or frames are stored in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medmrcnn.geometry import StackError, check_plane_orientation, image_planes, slice_ranks
from medmrcnn.errors import ExportError, GeometryMismatchError
from medmrcnn.volume import Volume

# Type 2 Patient / General Study attributes highdicom reads from the first source image; anonymised data may lack
# them, and the standard then asks for them present but empty.
_TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")


def _is_multiframe(ds: Any) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames") or 1) > 1


def _with_type2_present(ds: Dataset) -> Dataset:
    """`ds` itself, or a shallow copy with missing type 2 attributes added empty (the input is never modified)."""
    missing = [k for k in _TYPE2_COPIED if k not in ds]
    if not missing:
        return ds
    copy = Dataset({elem.tag: elem for elem in ds})  # new element dict: adding to it leaves `ds` untouched
    copy.file_meta = getattr(ds, "file_meta", Dataset())
    for keyword in missing:
        setattr(copy, keyword, "")
    return copy


def frame_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 3) plane positions, the first plane's (6,) orientation and (2,) PixelSpacing of one DICOM object."""
    try:
        planes = image_planes([ds])
    except StackError as e:
        raise GeometryMismatchError(str(e)) from None
    return planes.positions, planes.orientations[0], planes.spacings[0]


def _what(reference: Volume) -> str:
    return f"reference {reference.source}" if reference.source else "reference volume"


@dataclass
class SourcePlanes:
    """Where each slice of a DICOM Volume comes from.

    Attributes:
        datasets: classic series: one header per slice, in slice order; multi-frame: the one header.
        frames: multi-frame: 0-based frame index of each slice, shape (z,); None for classic series.
        positions: (z, 3) ImagePositionPatient of each slice (LPS mm), exact even where the affine uses a mean step.
    """

    datasets: list[Dataset]
    frames: np.ndarray | None
    positions: np.ndarray


def source_planes(reference: Volume) -> SourcePlanes:
    """Pair the slices of a DICOM Volume with its source images / frames by position (never by storage order)."""
    datasets = list(reference.source_datasets)
    what = _what(reference)
    if not datasets:
        raise ExportError(f"{what}: not DICOM (no DICOM headers in Volume.source_datasets); a DICOM-SEG must "
                          "reference the DICOM series it segments")
    nz, ny, nx = reference.shape
    if not (_is_multiframe(datasets[0]) or all("ImagePositionPatient" in d and "ImageOrientationPatient" in d
                                               for d in datasets)):
        raise ExportError(f"{what}: no patient position (ImagePositionPatient / ImageOrientationPatient: a "
                          "projection image such as CR, DX, MG or SC); a DICOM-SEG cannot place its frames")
    if (int(datasets[0].Rows), int(datasets[0].Columns)) != (ny, nx):
        raise GeometryMismatchError(f"{what}: DICOM images are {datasets[0].Rows}x{datasets[0].Columns} but the "
                                    f"volume slices are {ny}x{nx}")
    if len(datasets) == 1 and _is_multiframe(datasets[0]):
        positions, orientation, spacing = frame_geometry(datasets[0])
        numbers = reference.metadata.get("frame_numbers")
        # A 4D object (phases, echoes) has frames at repeated positions: the loader records which frames it used.
        frames = np.asarray(numbers, dtype=np.int64) - 1 if numbers is not None else np.arange(len(positions))
        if len(frames) != nz:
            raise GeometryMismatchError(f"{what}: {len(frames)} frames for {nz} slices")
    else:
        if len(datasets) != nz:
            raise GeometryMismatchError(f"{what}: {len(datasets)} DICOM headers for {nz} slices")
        orientation, spacing = datasets[0].ImageOrientationPatient, datasets[0].PixelSpacing
        positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=np.float64)
        frames = np.arange(nz)
    check_plane_orientation(orientation, spacing, reference.affine, what)
    slice_of = slice_ranks(positions[frames], reference.affine, what)
    in_order = np.empty(nz, dtype=np.int64)
    in_order[slice_of] = frames
    if len(datasets) == 1 and _is_multiframe(datasets[0]):
        return SourcePlanes(datasets, in_order, positions[in_order])
    return SourcePlanes([datasets[i] for i in in_order], None, positions[in_order])


def source_images(reference: Volume, array: np.ndarray) -> tuple[list[Dataset], np.ndarray]:
    """Source headers for highdicom and `array` (z, y, x, reference slice order) rearranged to their frame order."""
    planes = source_planes(reference)
    for keyword in _REQUIRED_UIDS:
        if not planes.datasets[0].get(keyword):
            raise ExportError(f"{_what(reference)}: the DICOM header has no {keyword}; a DICOM-SEG cannot "
                              "reference it")
    datasets = list(planes.datasets)
    datasets[0] = _with_type2_present(datasets[0])
    if planes.frames is None:
        return datasets, array
    framed = np.zeros((int(datasets[0].get("NumberOfFrames") or 1),) + array.shape[1:], dtype=array.dtype)
    framed[planes.frames] = array
    return datasets, framed
