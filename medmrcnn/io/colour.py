"""RGB to one channel for the 1-channel model: ITU-R BT.601 luma by default, or one named channel."""

from __future__ import annotations

import numpy as np

RGB_MODES = ("luma", "r", "g", "b")
_LUMA = np.array([0.299, 0.587, 0.114])


def rgb_to_single(array: np.ndarray, mode: str = "luma") -> np.ndarray:
    """Map (..., 3 or 4) RGB(A) to (...) in the input dtype; alpha is ignored.

    Args:
        array: colour samples last; integer or float.
        mode: "luma" (0.299 R + 0.587 G + 0.114 B, rounded for integers) or "r", "g", "b" for one channel.
    """
    if mode not in RGB_MODES:
        raise ValueError(f"rgb mode must be one of {RGB_MODES}; got {mode!r}")
    if mode != "luma":
        return np.ascontiguousarray(array[..., "rgb".index(mode)])
    grey = array[..., :3] @ _LUMA
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        grey = np.clip(np.rint(grey), info.min, info.max)
    return grey.astype(array.dtype)
