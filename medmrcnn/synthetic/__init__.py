"""Seeded synthetic data with exact instance ground truth: CT-like volumes and microscopy-like images."""

from medmrcnn.synthetic.ct import CT_LABELS, Phantom, make_ct_phantom
from medmrcnn.synthetic.microscopy import MICROSCOPY_LABELS, make_microscopy_image

__all__ = ["CT_LABELS", "MICROSCOPY_LABELS", "Phantom", "make_ct_phantom", "make_microscopy_image"]
