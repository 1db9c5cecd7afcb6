"""The reference series as highdicom needs it: source headers and the segment array in their frame order.

highdicom pairs `pixel_array[i]` with source image i (classic series) or source frame i + 1 (one multi-frame object).
Our arrays are in the reference Volume's slice order, so each source plane is placed on the Volume's grid from its
own position: this both finds the pairing and proves that the label map lies on the reference geometry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medmrcnn.dicomseg.geometry import check_plane_orientation, frame_geometry, grid_indices
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


def _what(reference: Volume) -> str:
    return f"reference {reference.source}" if reference.source else "reference volume"


def source_images(reference: Volume, array: np.ndarray) -> tuple[list[Dataset], np.ndarray]:
    """Source headers for highdicom and `array` (z, y, x, reference slice order) rearranged to their frame order."""
    datasets = list(reference.source_datasets)
    what = _what(reference)
    if not datasets:
        raise ExportError(f"{what}: not DICOM (no DICOM headers in Volume.source_datasets); a DICOM-SEG must "
                          "reference the DICOM series it segments")
    for keyword in _REQUIRED_UIDS:
        if not datasets[0].get(keyword):
            raise ExportError(f"{what}: the DICOM header has no {keyword}; a DICOM-SEG cannot reference it")
    nz, ny, nx = reference.shape
    if (int(datasets[0].Rows), int(datasets[0].Columns)) != (ny, nx):
        raise GeometryMismatchError(f"{what}: DICOM images are {datasets[0].Rows}x{datasets[0].Columns} but the "
                                    f"volume slices are {ny}x{nx}")
    if len(datasets) == 1 and _is_multiframe(datasets[0]):
        ds = datasets[0]
        positions, orientation, spacing = frame_geometry(ds)
        check_plane_orientation(orientation, spacing, reference.affine, what)
        numbers = reference.metadata.get("frame_numbers")
        # A 4D object (phases, echoes) has frames at repeated positions: the loader records which frames it used.
        frames = np.asarray(numbers, dtype=np.int64) - 1 if numbers is not None else np.arange(len(positions))
        z = grid_indices(positions[frames], reference.affine, reference.shape, what)[:, 0]
        if len(z) != nz or not np.array_equal(np.sort(z), np.arange(nz)):
            raise GeometryMismatchError(f"{what}: its {len(z)} frames do not map one-to-one onto the volume's {nz} "
                                        "slices (several volumes in one object?)")
        framed = np.zeros((len(positions), ny, nx), dtype=array.dtype)
        framed[frames] = array[z]
        return [_with_type2_present(ds)], framed
    if len(datasets) != nz:
        raise GeometryMismatchError(f"{what}: {len(datasets)} DICOM headers for {nz} slices")
    check_plane_orientation(datasets[0].ImageOrientationPatient, datasets[0].PixelSpacing, reference.affine, what)
    positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=np.float64)
    z = grid_indices(positions, reference.affine, reference.shape, what)[:, 0]
    if not np.array_equal(np.sort(z), np.arange(nz)):
        raise GeometryMismatchError(f"{what}: DICOM slices do not map one-to-one onto the volume's slices")
    ordered: list[Dataset] = [None] * nz  # type: ignore[list-item]
    for ds, k in zip(datasets, z):
        ordered[int(k)] = ds
    ordered[0] = _with_type2_present(ordered[0])
    return ordered, array
