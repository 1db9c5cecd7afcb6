"""Intensity mapping to the network's input range [0, 1] (no ImageNet statistics on Hounsfield units)."""

from __future__ import annotations

import numpy as np


def window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values in [center - width/2, center + width/2] (e.g. HU) linearly to [0, 1], clipping outside; float32."""
    lo = center - width / 2.0
    out = (np.asarray(array, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / width)
    return np.clip(out, 0.0, 1.0, out=out)


def percentile_normalise(array: np.ndarray, lower: float = 1.0, upper: float = 99.5) -> np.ndarray:
    """Map the [lower, upper] percentiles of the array (MR, microscopy) to [0, 1], clipping outside; float32."""
    a = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(a, [lower, upper])
    if hi <= lo:
        return np.zeros_like(a)
    out = (a - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)
