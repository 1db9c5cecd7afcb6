"""Voxel grids: comparing two grids, placing DICOM planes on a grid, resampling a sheared grid onto an orthogonal one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medmrcnn.errors import GeometryMismatchError
from medmrcnn.geometry.axes import is_sheared, plane_normal
from medmrcnn.geometry.tolerances import (
    GRID_TOL_VOXELS, ORIENTATION_TOL, PIXEL_SPACING_REL_TOL, SAME_GRID_TOL_VOXELS,
)


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
    if np.abs(np.asarray(pixel_spacing, dtype=np.float64) - grid_spacing).max() > PIXEL_SPACING_REL_TOL * grid_spacing.max():
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
    if np.abs(relative - np.eye(4)).max() <= SAME_GRID_TOL_VOXELS:
        return
    spacing, ref_spacing = np.linalg.norm(affine[:3, :3], axis=0), np.linalg.norm(reference_affine[:3, :3], axis=0)
    if np.abs(spacing - ref_spacing).max() > PIXEL_SPACING_REL_TOL * ref_spacing.max():
        detail = f"spacing (x, y, z) {np.round(spacing, 4).tolist()} mm vs {np.round(ref_spacing, 4).tolist()} mm"
    elif np.abs(affine[:3, :3] / spacing - reference_affine[:3, :3] / ref_spacing).max() > ORIENTATION_TOL:
        detail = "orientation (direction cosines) differs, e.g. a flipped or transposed axis"
    else:
        detail = (f"origin {np.round(affine[:3, 3], 3).tolist()} mm vs "
                  f"{np.round(reference_affine[:3, 3], 3).tolist()} mm")
    raise GeometryMismatchError(f"{what}: not on the reference's voxel grid: {detail}; resample the label map onto the "
                                "reference grid")


def orthogonal_grid(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int, int],
                                                                              np.ndarray]:
    """The orthogonal grid holding every voxel of a sheared (gantry-tilt) grid.

    Each slice keeps its plane; the slice axis becomes the plane normal with the distance between planes as spacing,
    and the in-plane extent grows so that the shifted slices all fit.
    Returns:
        (affine, (z, y, x) shape, (nz, 2) float offsets): offsets[k] = (y, x) position in the new grid of pixel
        (0, 0) of sheared slice k.
    """
    nz, ny, nx = shape
    sx, sy = np.linalg.norm(affine[:3, :2], axis=0)
    row, col = affine[:3, 0] / sx, affine[:3, 1] / sy
    normal = plane_normal(affine)
    step = affine[:3, 2]
    shear = step - (step @ normal) * normal
    per_slice = np.array([shear @ col / sy, shear @ row / sx])  # (y, x) pixels per slice
    shifts = np.arange(nz)[:, None] * per_slice[None, :]
    low = np.floor(shifts.min(axis=0) + 1e-6)
    high = np.ceil(shifts.max(axis=0) - 1e-6)
    new_shape = (nz, ny + int(high[0] - low[0]), nx + int(high[1] - low[1]))
    out = np.eye(4)
    out[:3, 0], out[:3, 1] = affine[:3, 0], affine[:3, 1]
    out[:3, 2] = (step @ normal) * normal
    out[:3, 3] = affine[:3, 3] + low[1] * affine[:3, 0] + low[0] * affine[:3, 1]
    return out, new_shape, shifts - low[None, :]


def resample_to_orthogonal(array: np.ndarray, affine: np.ndarray, *, labels: bool,
                           fill: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A sheared (z, y, x) volume on the orthogonal grid of `orthogonal_grid` (unchanged when not sheared).

    Each slice moves within its own plane: labels by nearest neighbour (no new values), images linearly. Voxels no
    slice covers get `fill` (0 for labels, the volume's minimum for images).
    Returns:
        (array, affine) on the orthogonal grid, same dtype.
    """
    if not is_sheared(affine):
        return array, affine
    new_affine, shape, offsets = orthogonal_grid(affine, array.shape)
    if fill is None:
        fill = 0 if labels or array.size == 0 else float(array.min())
    out = np.full(shape, fill, dtype=array.dtype)
    order = 0 if labels else 1
    for k in range(shape[0]):
        y0, x0 = offsets[k]
        ndimage.affine_transform(array[k], np.eye(2), offset=(-y0, -x0), output_shape=shape[1:], output=out[k],
                                 order=order, mode="grid-constant", cval=fill, prefilter=False)
    return out, new_affine


def regular_grid(affine: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A regular grid holding irregularly spaced slices (gaps, uneven steps) each at its true position.

    The slice step is the smallest distance between neighbouring planes; each slice goes to the grid slice nearest
    its plane (exact when the steps are multiples of the smallest, as with missing slices).
    Args:
        affine: the stack's affine (in-plane axes; its slice step only gives the stacking direction).
        positions: (z, 3) LPS mm of voxel (0, 0) of each slice, in slice order.
    Returns:
        (affine of the regular grid, grid slice index of each slice (z,), largest distance in mm between a slice's
        plane and its grid slice).
    """
    normal = plane_normal(affine)
    along = np.asarray(positions, dtype=np.float64) @ normal
    along = along - along[0]
    steps = np.diff(along)
    step = float(steps.min()) if len(steps) else abs(float(affine[:3, 2] @ normal))
    index = np.rint(along / step).astype(np.int64)
    out = affine.copy()
    out[:3, 2] = affine[:3, 2] * (step / float(affine[:3, 2] @ normal))  # keeps a gantry tilt's direction
    out[:3, 3] = positions[0]
    return out, index, float(np.abs(along - index * step).max()) if len(along) else 0.0


def resample_to_regular(array: np.ndarray, affine: np.ndarray, positions: np.ndarray, *,
                        fill: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) slices at irregular `positions` placed on `regular_grid`; grid slices no acquired slice falls on
    (gaps) get `fill`: nothing is interpolated across a gap (as dcmqi rebuilds a SEG's grid)."""
    new_affine, index, _ = regular_grid(affine, positions)
    out = np.full((int(index[-1]) + 1,) + array.shape[1:], fill, dtype=array.dtype)
    out[index] = array
    return out, new_affine
