"""Place DICOM planes (frames or slices) on a `Volume` grid: the geometry checks of writer and reader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medmrcnn.errors import GeometryMismatchError

# Tolerances in voxels: DICOM positions are decimal strings (DS, 16 characters) and `allow_irregular` volumes use a
# mean slice step, so planes sit near, not exactly on, the grid; a quarter voxel still leaves no ambiguity.
GRID_TOL_VOXELS = 0.25
ORIENTATION_TOL = 1e-3
SPACING_REL_TOL = 1e-3


def frame_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (n, 3) ImagePositionPatient, shared (6,) ImageOrientationPatient and (2,) PixelSpacing (row, col) mm.

    Works for multi-frame objects (functional groups, per-frame or shared) and for classic single-frame images.
    """
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return (
            np.asarray(ds.ImagePositionPatient, dtype=np.float64)[None],
            np.asarray(ds.ImageOrientationPatient, dtype=np.float64),
            np.asarray(ds.PixelSpacing, dtype=np.float64),
        )
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = ds.PerFrameFunctionalGroupsSequence

    def group(item: Any, keyword: str) -> Any:
        if keyword in item:
            return item[keyword].value[0]
        if shared is not None and keyword in shared:
            return shared[keyword].value[0]
        raise GeometryMismatchError(f"multi-frame object without {keyword}: frames cannot be placed in space")

    positions = np.array([group(f, "PlanePositionSequence").ImagePositionPatient for f in per_frame], dtype=float)
    orientation = np.asarray(group(per_frame[0], "PlaneOrientationSequence").ImageOrientationPatient, dtype=float)
    spacing = np.asarray(group(per_frame[0], "PixelMeasuresSequence").PixelSpacing, dtype=float)
    return positions, orientation, spacing


def check_plane_orientation(orientation: Sequence[float], pixel_spacing: Sequence[float], affine: np.ndarray,
                            what: str) -> None:
    """Raise GeometryMismatchError unless rows/columns run along the grid's x/y axes with the grid's spacing."""
    directions = affine[:3, :2] / np.linalg.norm(affine[:3, :2], axis=0)
    given = np.asarray(orientation, dtype=np.float64).reshape(2, 3).T
    if np.abs(given - directions).max() > ORIENTATION_TOL:
        raise GeometryMismatchError(
            f"{what}: plane orientation {np.round(given.T.ravel(), 4).tolist()} differs from the reference's "
            f"{np.round(directions.T.ravel(), 4).tolist()}"
        )
    grid_spacing = np.linalg.norm(affine[:3, :2], axis=0)[::-1]  # (row spacing = y, column spacing = x)
    if np.abs(np.asarray(pixel_spacing, dtype=np.float64) - grid_spacing).max() > SPACING_REL_TOL * grid_spacing.max():
        raise GeometryMismatchError(
            f"{what}: pixel spacing {np.round(pixel_spacing, 5).tolist()} mm differs from the reference's "
            f"{np.round(grid_spacing, 5).tolist()} mm"
        )


def grid_indices(positions: np.ndarray, affine: np.ndarray, slice_positions: np.ndarray, what: str) -> np.ndarray:
    """Voxel index (k, j, i) = (z, y, x) of the first pixel of each plane on a grid, shape (n, 3), int.

    Args:
        positions: (n, 3) LPS mm of the centre of each plane's first (top-left) pixel.
        affine: the grid's data-contract affine (directions and in-plane spacing).
        slice_positions: (z, 3) LPS mm of voxel (0, 0) of each grid slice, in slice order: from the source headers
            when known (exact for irregular spacing), else from the affine.
        what: names the planes in error messages.
    Planes may be shifted by whole pixels within the slice (a SEG may crop its frames). Raises
    GeometryMismatchError when a plane falls between voxels or outside the grid's slices.
    """
    inverse = np.linalg.inv(affine[:3, :3]).T
    along = ((np.asarray(slice_positions, dtype=np.float64) - affine[:3, 3]) @ inverse)[:, 2]
    k = ((np.asarray(positions, dtype=np.float64).reshape(-1, 3) - affine[:3, 3]) @ inverse)[:, 2]
    z = np.rint(np.interp(k, along, np.arange(len(along)))).astype(np.int64)  # `along` rises with slice index
    if np.any((k < along[0] - GRID_TOL_VOXELS) | (k > along[-1] + GRID_TOL_VOXELS)):
        raise GeometryMismatchError(f"{what}: planes lie outside the reference volume's {len(along)} slices")
    ijk = (np.asarray(positions, dtype=np.float64).reshape(-1, 3) - slice_positions[z]) @ inverse
    off = np.abs(ijk - np.rint(ijk)).max(axis=0) if len(ijk) else np.zeros(3)
    off[2] = np.abs(k - along[z]).max() if len(k) else 0.0
    if off.max() > GRID_TOL_VOXELS:
        axis = "xyz"[int(np.argmax(off))]
        raise GeometryMismatchError(
            f"{what}: planes fall between voxels of the reference grid (off by {off.max():.2f} voxels along {axis}); "
            "not the same voxel grid"
        )
    offsets = np.rint(ijk[:, :2]).astype(np.int64)
    return np.stack([z, offsets[:, 1], offsets[:, 0]], axis=1)


def affine_slice_positions(affine: np.ndarray, nz: int) -> np.ndarray:
    """(nz, 3) LPS mm of voxel (0, 0) of each slice of a regular grid."""
    return affine[:3, 3] + np.arange(nz)[:, None] * affine[:3, 2]


def slice_ranks(positions: np.ndarray, affine: np.ndarray, what: str) -> np.ndarray:
    """Slice index of each source plane of a volume: its rank along the volume's slice axis, shape (n,) int.

    Ranking rather than rounding keeps series loaded with irregular spacing (mean step in the affine) exact; the
    planes must still lie on the volume's rows and columns and at distinct positions.
    """
    ijk = (np.asarray(positions, dtype=np.float64).reshape(-1, 3) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    if np.abs(ijk[:, :2]).max() > GRID_TOL_VOXELS:
        raise GeometryMismatchError(f"{what}: DICOM planes are shifted within the slice relative to the volume grid")
    along = np.sort(ijk[:, 2])
    if len(along) > 1 and np.diff(along).min() < 0.5:
        raise GeometryMismatchError(f"{what}: several DICOM planes at the same position (several volumes in one "
                                    "object?)")
    ranks = np.empty(len(ijk), dtype=np.int64)
    ranks[np.argsort(ijk[:, 2])] = np.arange(len(ijk))
    return ranks


def check_same_grid(affine: np.ndarray, shape: tuple[int, ...], reference_affine: np.ndarray,
                    reference_shape: tuple[int, ...], what: str) -> None:
    """Raise GeometryMismatchError (saying what differs) unless two (z, y, x) grids coincide voxel for voxel."""
    if tuple(shape) != tuple(reference_shape):
        raise GeometryMismatchError(f"{what}: size (z, y, x) {tuple(shape)} differs from the reference's "
                                    f"{tuple(reference_shape)}; resample the label map onto the reference grid")
    # In reference voxel units the label grid must be the identity: catches spacing, direction and origin at once.
    relative = np.linalg.solve(reference_affine, affine)
    if np.abs(relative - np.eye(4)).max() <= 1e-3:
        return
    spacing, ref_spacing = np.linalg.norm(affine[:3, :3], axis=0), np.linalg.norm(reference_affine[:3, :3], axis=0)
    if np.abs(spacing - ref_spacing).max() > 1e-3 * ref_spacing.max():
        detail = f"spacing (x, y, z) {np.round(spacing, 4).tolist()} mm vs {np.round(ref_spacing, 4).tolist()} mm"
    elif np.abs(affine[:3, :3] / spacing - reference_affine[:3, :3] / ref_spacing).max() > ORIENTATION_TOL:
        detail = "orientation (direction cosines) differs, e.g. a flipped or transposed axis"
    else:
        detail = (f"origin {np.round(affine[:3, 3], 3).tolist()} mm vs "
                  f"{np.round(reference_affine[:3, 3], 3).tolist()} mm")
    raise GeometryMismatchError(f"{what}: not on the reference's voxel grid: {detail}; resample the label map onto the "
                                "reference grid")
