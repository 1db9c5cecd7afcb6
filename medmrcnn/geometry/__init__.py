"""Patient-space geometry, owned here and nowhere else (see docs/data-contract.md and docs/loading.md).

- `tolerances`: the one set of tolerance constants;
- `axes`: LPS / RAS, axis codes, slice spacing (distance between planes), shear, reorientation to the closest
  axis-aligned layout;
- `planes`: plane extraction from DICOM headers (classic and multi-frame functional groups) and stacking planes
  into a volume (ordering, gaps, tilt, duplicates);
- `grid`: grid comparison (`check_same_grid`), placing DICOM planes on a grid (SEG reader / writer) and resampling
  a sheared (gantry-tilt) grid onto an orthogonal one and irregular slices onto a regular grid.
"""

from medmrcnn.geometry.axes import (
    RAS_TO_LPS, Reorientation, is_sheared, orientation_code, plane_normal, reorientation_to, shear_degrees,
    spacing_zyx,
)
from medmrcnn.geometry.grid import (
    affine_slice_positions, check_plane_orientation, check_same_grid, grid_indices, orthogonal_grid, regular_grid,
    resample_to_orthogonal, resample_to_regular, slice_ranks,
)
from medmrcnn.geometry.planes import (
    Planes, StackError, StackGeometry, functional_value, image_planes, stack_geometry,
)
from medmrcnn.geometry.tolerances import (
    DUPLICATE_TOL_MM, GRID_TOL_VOXELS, ORIENTATION_TOL, PIXEL_SPACING_REL_TOL, SAME_GRID_TOL_VOXELS,
    SPACING_ABS_TOL_MM, SPACING_REL_TOL, TILT_TOL_DEG,
)

__all__ = [
    "DUPLICATE_TOL_MM", "GRID_TOL_VOXELS", "ORIENTATION_TOL", "PIXEL_SPACING_REL_TOL", "Planes", "RAS_TO_LPS",
    "Reorientation", "SAME_GRID_TOL_VOXELS", "SPACING_ABS_TOL_MM", "SPACING_REL_TOL", "StackError", "StackGeometry",
    "TILT_TOL_DEG", "affine_slice_positions", "check_plane_orientation", "check_same_grid", "functional_value",
    "grid_indices", "image_planes", "is_sheared", "orientation_code", "orthogonal_grid", "plane_normal",
    "regular_grid", "reorientation_to", "resample_to_orthogonal", "resample_to_regular", "shear_degrees", "slice_ranks", "spacing_zyx", "stack_geometry",
]
