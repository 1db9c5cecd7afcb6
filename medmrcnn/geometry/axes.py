"""Axis conventions of the data contract: LPS / RAS, axis codes, spacing between planes, shear, reorientation.

An affine maps voxel index (x, y, z, 1) = (i, j, k, 1) to patient LPS millimetres; arrays are (z, y, x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medmrcnn.geometry.tolerances import ORIENTATION_TOL, TILT_TOL_DEG

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: also LPS -> RAS


def orientation_code(affine: np.ndarray) -> str:
    """Axis codes (x, y, z) in LPS "to" convention: the patient direction each index axis points to most."""
    pos, neg = "LPS", "RAI"
    codes = []
    for c in range(3):
        v = np.asarray(affine)[:3, c]
        a = int(np.argmax(np.abs(v)))
        codes.append(pos[a] if v[a] > 0 else neg[a])
    return "".join(codes)


def plane_normal(affine: np.ndarray) -> np.ndarray:
    """Unit normal (3,) of the slice planes: row direction x column direction (the DICOM slice normal)."""
    n = np.cross(affine[:3, 0], affine[:3, 1])
    return n / np.linalg.norm(n)


def spacing_zyx(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm, (z, y, x): z is the distance between slice planes (2.5 mm for a 2.5 mm stack even when a
    gantry tilt makes the step between slice origins longer), y and x the pixel spacing."""
    sx, sy = np.linalg.norm(affine[:3, :2], axis=0)
    sz = abs(float(affine[:3, 2] @ plane_normal(affine)))
    return float(sz), float(sy), float(sx)


def shear_degrees(affine: np.ndarray) -> float:
    """Angle between the slice step and the plane normal (the gantry tilt), degrees; 0 for orthogonal grids."""
    step = affine[:3, 2]
    along = abs(float(step @ plane_normal(affine)))
    return math.degrees(math.atan2(float(np.linalg.norm(np.cross(step, plane_normal(affine)))), along))


def is_sheared(affine: np.ndarray) -> bool:
    """True when the affine's axes are not orthogonal (gantry tilt, sheared stack): ITK cannot represent it."""
    cols = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return abs(float(cols[:, 0] @ cols[:, 1])) > ORIENTATION_TOL or shear_degrees(affine) > TILT_TOL_DEG


@dataclass(frozen=True)
class Reorientation:
    """A permutation and flips of the (z, y, x) array axes that bring a grid to a target axis layout.

    Attributes:
        axes: for each output array axis (z, y, x), the input array axis it comes from.
        flips: for each output array axis, whether it is reversed.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        """True when nothing moves."""
        return self.axes == (0, 1, 2) and not any(self.flips)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The array in the target layout (a view; leading axes (z, y, x), any trailing axes kept)."""
        out = np.transpose(array, self.axes + tuple(range(3, array.ndim)))
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def undo(self, array: np.ndarray) -> np.ndarray:
        """Bring an array in the target layout back to the input layout (a view)."""
        out = array[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]
        inverse = tuple(int(i) for i in np.argsort(self.axes))
        return np.transpose(out, inverse + tuple(range(3, array.ndim)))

    def affine(self, affine: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
        """The affine of the reoriented grid (the same physical voxels)."""
        out = np.eye(4)
        origin = affine[:3, 3].copy()
        for out_axis, (src, flip) in enumerate(zip(self.axes, self.flips, strict=True)):
            column = affine[:3, 2 - src]  # array axis a is affine column 2 - a
            if flip:
                origin = origin + column * (shape_zyx[src] - 1)
                column = -column
            out[:3, 2 - out_axis] = column
        out[:3, 3] = origin
        return out


def reorientation_to(affine: np.ndarray, code: str = "LPS") -> Reorientation:
    """The axis permutation and flips that make a grid's axis codes `code` (each index axis pointing towards the
    patient direction of the same letter), e.g. a sagittal stack to axial slices for a model trained on axial ones."""
    letters = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
    current = orientation_code(affine)
    if sorted(letters[c][0] for c in current) != [0, 1, 2]:
        raise ValueError(f"oblique grid with two axes towards the same patient direction ({current})")
    axes, flips = [0, 0, 0], [False, False, False]
    for target_col, letter in enumerate(code):
        patient_axis, sign = letters[letter]
        src_col = next(c for c in range(3) if letters[current[c]][0] == patient_axis)
        axes[2 - target_col] = 2 - src_col
        flips[2 - target_col] = letters[current[src_col]][1] != sign
    return Reorientation(tuple(axes), tuple(flips))  # type: ignore[arg-type]
