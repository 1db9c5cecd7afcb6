"""Preprocessing: intensity mapping to the network's [0, 1] input range, 2.5D context stacks, in-plane resampling."""

from medmrcnn.transforms.context import context_indices, slice_with_context
from medmrcnn.transforms.intensity import (
    CT_WINDOWS,
    check_intensity_fit,
    normalise_volume,
    parse_ct_window,
    percentile_normalise,
    resolve_intensity,
    training_intensity,
    window,
)
from medmrcnn.transforms.resample import inplane_size, resize_slices

__all__ = [
    "CT_WINDOWS", "check_intensity_fit", "context_indices", "inplane_size", "normalise_volume", "parse_ct_window",
    "percentile_normalise", "resize_slices", "resolve_intensity", "slice_with_context", "training_intensity", "window",
]
