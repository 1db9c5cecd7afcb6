"""2.5D input: a slice with k neighbours above and below as extra channels."""

from __future__ import annotations

import numpy as np


def context_indices(z: int, depth: int, k: int) -> np.ndarray:
    """Slice indices z-k..z+k, clamped to [0, depth-1] (edges replicate the first/last slice)."""
    return np.clip(np.arange(z - k, z + k + 1), 0, depth - 1)


def slice_with_context(array: np.ndarray, z: int, k: int) -> np.ndarray:
    """(2k+1, y, x) stack centred on slice z of a (z, y, x) array; k = 0 gives (1, y, x)."""
    return array[context_indices(z, array.shape[0], k)]
