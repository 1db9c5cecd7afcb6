"""Mask comparisons shared by the tests: Dice overlap and a voxel to click on."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def centre(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the mask's voxel nearest its centre of mass (inside it, even for a ring or a crescent)."""
    idx = np.argwhere(mask)
    com = np.array(ndimage.center_of_mass(mask))
    return tuple(int(v) for v in idx[np.argmin(((idx - com) ** 2).sum(1))])
