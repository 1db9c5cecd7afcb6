"""The one set of geometry tolerances used by loaders, SEG reader / writer, datalist checks and the plugin."""

# Direction cosines are written with 3-6 decimals by scanners: two orientations within this (max abs difference of
# the cosines) are the same, and row / column directions with a dot product below it are orthogonal.
ORIENTATION_TOL = 1e-3
# Two planes closer than this along the normal are at the same position (echoes, phases, duplicates).
DUPLICATE_TOL_MM = 0.01
# Slice steps that differ from the median by more than max(SPACING_REL_TOL * median, SPACING_ABS_TOL_MM) make a
# stack irregular (gaps, non-uniform spacing).
SPACING_REL_TOL = 0.01
SPACING_ABS_TOL_MM = 0.005
# PixelSpacing values equal within this fraction of the larger are the same.
PIXEL_SPACING_REL_TOL = 1e-3
# A slice step leaning more than this off the plane normal is a gantry tilt / sheared stack.
TILT_TOL_DEG = 0.01
# DICOM positions are decimal strings (DS, 16 characters) and planes of irregular stacks sit near, not exactly on, a
# regular grid: a plane within a quarter voxel of a grid position is on it.
GRID_TOL_VOXELS = 0.25
# Two affines describe the same voxel grid when, in voxel units of one, the other differs from the identity by at
# most this (catches spacing, direction and origin at once; 1e-3 voxel is 0.5 um on a 0.5 mm grid).
SAME_GRID_TOL_VOXELS = 1e-3
