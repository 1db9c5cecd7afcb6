"""Seeded synthetic data with exact instance ground truth: CT-like volumes, microscopy-like images, MR-like
thin walls, ribbons and rims."""

from medmrcnn.synthetic.ct import CT_LABELS, Phantom, make_ct_phantom
from medmrcnn.synthetic.microscopy import MICROSCOPY_LABELS, make_microscopy_image
from medmrcnn.synthetic.walls import WALL_LABELS, make_wall_phantom

__all__ = ["CT_LABELS", "MICROSCOPY_LABELS", "Phantom", "make_ct_phantom", "make_microscopy_image",
           "WALL_LABELS", "make_wall_phantom"]
