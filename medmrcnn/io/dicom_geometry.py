"""Order DICOM slices in space and build the data-contract affine; detect gaps, tilt and inconsistent stacks.

Slices are sorted by ImagePositionPatient projected on the slice normal (row x column direction), never by file
name or InstanceNumber. Decisions (documented in docs/loading.md):
- mixed orientations, mixed pixel spacing, duplicate positions, non-collinear positions: `StackError` (no volume);
- missing slices / non-uniform spacing: reported as `irregular` (loaded only when the caller allows it, with the mean
  step as slice spacing);
- gantry tilt (slices shifted along the plane from one to the next): loaded with the exact sheared affine + warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ORIENTATION_TOL = 1e-3  # direction cosines written with 3-6 decimals by scanners
DUPLICATE_TOL_MM = 0.01
SPACING_REL_TOL = 0.01
SPACING_ABS_TOL_MM = 0.005
TILT_TOL_DEG = 0.01


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
    if len(_distinct(pixel_spacings, 1e-3 * float(pixel_spacings.max()))) > 1:
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
