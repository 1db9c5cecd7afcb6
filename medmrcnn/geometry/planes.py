"""DICOM planes: where each image or frame lies (classic and multi-frame headers) and how planes stack into a volume.

Slices are sorted by ImagePositionPatient projected on the slice normal (row x column direction), never by file
name or InstanceNumber. Decisions (documented in docs/loading.md):
- mixed orientations, mixed pixel spacing, duplicate positions, non-collinear positions: `StackError` (no volume);
  the scanner splits such series into sub-stacks first (`medmrcnn.io.dicom_split`);
- missing slices / non-uniform spacing: reported as `irregular` (loaded only when the caller allows it, then
  resampled onto a regular grid);
- gantry tilt (slices shifted along the plane from one to the next): the exact sheared affine + a warning; outputs
  are resampled onto an orthogonal grid when written (`medmrcnn.geometry.grid.resample_to_orthogonal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medmrcnn.geometry.tolerances import (
    DUPLICATE_TOL_MM, ORIENTATION_TOL, PIXEL_SPACING_REL_TOL, SPACING_ABS_TOL_MM, SPACING_REL_TOL, TILT_TOL_DEG,
)


class StackError(ValueError):
    """The slices cannot form one volume (the message says why)."""


@dataclass
class StackGeometry:
    """Where each input slice goes and the affine of the assembled volume.

    Attributes:
        order: index of the input slice at each z, shape (n,).
        affine: float64[4, 4] voxel (x, y, z, 1) -> LPS mm.
        warnings: notes such as gantry tilt.
        irregular: description of gaps / non-uniform spacing, None when the spacing is uniform.
    """

    order: np.ndarray
    affine: np.ndarray
    warnings: list[str] = field(default_factory=list)
    irregular: str | None = None


def _distinct(rows: np.ndarray, tol: float) -> list[int]:
    """Indices of the first row of each group of rows equal within `tol` (max abs difference)."""
    reps: list[int] = []
    for i, r in enumerate(rows):
        if not any(np.max(np.abs(rows[j] - r)) <= tol for j in reps):
            reps.append(i)
    return reps


def stack_geometry(
    positions: np.ndarray,
    orientations: np.ndarray,
    pixel_spacings: np.ndarray,
    single_slice_spacing: float | None = None,
) -> StackGeometry:
    """Sort slices along the normal and build the affine.

    Args:
        positions: (n, 3) ImagePositionPatient of each slice, LPS mm.
        orientations: (n, 6) ImageOrientationPatient (row direction, column direction).
        pixel_spacings: (n, 2) PixelSpacing (between rows, between columns), mm.
        single_slice_spacing: slice spacing to use for a one-slice stack (SpacingBetweenSlices / SliceThickness).
    Returns:
        StackGeometry; raises StackError when the slices cannot form one volume.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    orientations = np.asarray(orientations, dtype=np.float64).reshape(-1, 6)
    pixel_spacings = np.asarray(pixel_spacings, dtype=np.float64).reshape(-1, 2)
    n = len(positions)
    if len(reps := _distinct(orientations, ORIENTATION_TOL)) > 1:
        raise StackError(
            f"mixed orientations: {len(reps)} different ImageOrientationPatient values in {n} images "
            "(e.g. a multi-plane localizer); cannot form one volume"
        )
    if len(_distinct(pixel_spacings, PIXEL_SPACING_REL_TOL * float(pixel_spacings.max()))) > 1:
        raise StackError(f"mixed pixel spacing ({np.unique(pixel_spacings, axis=0).tolist()} mm) in one series")
    row, col = orientations[0, :3], orientations[0, 3:]
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 1e-6:
        raise StackError("ImageOrientationPatient has a zero direction vector")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    if abs(float(row @ col)) > ORIENTATION_TOL:
        raise StackError("ImageOrientationPatient row and column directions are not orthogonal")
    normal = np.cross(row, col)
    row_spacing, col_spacing = (float(v) for v in pixel_spacings[0])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist, pos = dist[order], positions[order]
    warnings: list[str] = []
    irregular = None
    if n == 1:
        spacing = float(single_slice_spacing) if single_slice_spacing and single_slice_spacing > 0 else 1.0
        z_col = normal * spacing
    else:
        steps = np.diff(dist)
        if np.any(dup := steps < DUPLICATE_TOL_MM):
            raise StackError(
                f"duplicate slice positions: {n} images at {n - int(dup.sum())} distinct positions (several echoes, "
                "phases or acquisitions in one series); cannot form one volume"
            )
        median = float(np.median(steps))
        if np.any(np.abs(steps - median) > max(SPACING_REL_TOL * median, SPACING_ABS_TOL_MM)):
            gaps = steps > 1.5 * median
            if gaps.any():
                missing = int(sum(round(s / median) - 1 for s in steps[gaps]))
                first = int(np.argmax(gaps))
                irregular = (
                    f"about {missing} missing slice(s): gap of {steps[first]:.4g} mm after slice {first} "
                    f"(expected {median:.4g} mm)"
                )
            else:
                irregular = f"non-uniform slice spacing: {steps.min():.4g} to {steps.max():.4g} mm"
        step = (pos[-1] - pos[0]) / (n - 1)
        along = float(step @ normal)
        expected = pos[0] + np.outer((dist - dist[0]) / along, step)
        off_line = float(np.linalg.norm(pos - expected, axis=1).max())
        if off_line > max(0.1 * min(row_spacing, col_spacing), 0.01):
            raise StackError(f"slice positions do not lie on one line (up to {off_line:.3g} mm off); not one stack")
        tilt = math.degrees(math.atan2(float(np.linalg.norm(step - along * normal)), along))
        if tilt > TILT_TOL_DEG:
            z_col = step
            warnings.append(
                f"gantry tilt / sheared stack of {tilt:.2f} degrees: the affine is sheared (exact); SimpleITK's "
                "DICOM reader and many viewers ignore the shear"
            )
        else:
            z_col = normal * along
    affine = np.eye(4)
    affine[:3, 0] = row * col_spacing
    affine[:3, 1] = col * row_spacing
    affine[:3, 2] = z_col
    affine[:3, 3] = pos[0]
    return StackGeometry(order=order, affine=affine, warnings=warnings, irregular=irregular)


def functional_value(ds: Any, frame: Any, sequence: str, keyword: str) -> Any:
    """Value of `keyword` in functional group `sequence` of a multi-frame object: per-frame item first, then shared;
    None when absent."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (frame, shared[0] if shared else None):
        items = group.get(sequence) if group is not None else None
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


@dataclass
class Planes:
    """Where the planes (frames or single-frame images) of DICOM objects lie.

    Attributes:
        positions: (n, 3) ImagePositionPatient, LPS mm of the centre of the first (top-left) pixel.
        orientations: (n, 6) ImageOrientationPatient (row direction, column direction).
        spacings: (n, 2) PixelSpacing (between rows, between columns), mm; 1 mm when absent.
        has_spacing: False when no PixelSpacing was found (1 mm assumed).
    """

    positions: np.ndarray
    orientations: np.ndarray
    spacings: np.ndarray
    has_spacing: bool = True


def _floats(value: Any, n: int, what: str) -> list[float]:
    """`n` finite numbers from a multi-valued attribute; StackError naming the attribute when malformed."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != n or not all(np.isfinite(numbers)):
        raise StackError(f"invalid {what} {str(value)[:80]} (expected {n} numbers)")
    return numbers


def image_planes(datasets: list[Any]) -> Planes:
    """Planes of classic single-frame images (one per dataset) or of one multi-frame object (one per frame).

    Multi-frame geometry comes from the Plane Position / Plane Orientation / Pixel Measures functional groups
    (per-frame, else shared). Raises StackError when a plane has no position or orientation, or malformed values.
    """
    if len(datasets) == 1 and "PerFrameFunctionalGroupsSequence" in datasets[0]:
        ds = datasets[0]
        positions, orientations, spacings = [], [], []
        has_spacing = True
        for fg in ds.PerFrameFunctionalGroupsSequence:
            ipp = functional_value(ds, fg, "PlanePositionSequence", "ImagePositionPatient")
            iop = functional_value(ds, fg, "PlaneOrientationSequence", "ImageOrientationPatient")
            ps = functional_value(ds, fg, "PixelMeasuresSequence", "PixelSpacing")
            if ipp is None or iop is None:
                raise StackError("multi-frame image without Plane Position/Orientation functional groups: frames "
                                 "cannot be placed in space")
            positions.append(_floats(ipp, 3, "ImagePositionPatient"))
            orientations.append(_floats(iop, 6, "ImageOrientationPatient"))
            spacings.append(_floats(ps, 2, "PixelSpacing") if ps else [1.0, 1.0])
            has_spacing = has_spacing and bool(ps)
        return Planes(np.array(positions), np.array(orientations), np.array(spacings), has_spacing)
    missing = sum("ImagePositionPatient" not in d or "ImageOrientationPatient" not in d for d in datasets)
    if missing:
        raise StackError(f"cannot order {len(datasets)} images in space: ImagePositionPatient/"
                         f"ImageOrientationPatient missing in {missing} of them")
    spacings = []
    for d in datasets:
        ps = d.get("PixelSpacing") or d.get("ImagerPixelSpacing")
        spacings.append(_floats(ps, 2, "PixelSpacing") if ps else [1.0, 1.0])
    return Planes(
        np.array([_floats(d.ImagePositionPatient, 3, "ImagePositionPatient") for d in datasets]),
        np.array([_floats(d.ImageOrientationPatient, 6, "ImageOrientationPatient") for d in datasets]),
        np.array(spacings), all(d.get("PixelSpacing") or d.get("ImagerPixelSpacing") for d in datasets),
    )
