"""Preprocessing: intensity mapping to the network's [0, 1] input range, 2.5D context stacks."""

from medmrcnn.transforms.intensity import percentile_normalise, window

__all__ = ["percentile_normalise", "window"]
