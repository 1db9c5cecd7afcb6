"""`AnnotatedVolume`: an image with instance ground truth, the unit every training data source produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmrcnn.volume import Volume


@dataclass
class AnnotatedVolume:
    """One training/validation item on the data contract.

    Attributes:
        volume: the image (z, y, x); a 2D image has z == 1.
        gt_instances: integer (z, y, x) instance ids on the image grid, 0 = background.
        gt_classes: instance id -> class id (1..N of the model's labels). Ids missing here are ignored.
        name: where it came from (file path or generator seed), used in messages and reports.
    """

    volume: Volume
    gt_instances: np.ndarray
    gt_classes: dict[int, int]
    name: str

    def class_map(self) -> np.ndarray:
        """uint8/uint16 (z, y, x) semantic label map derived from the instances (unmapped ids -> 0)."""
        top = int(self.gt_instances.max(initial=0))
        lut = np.zeros(max(top, max(self.gt_classes, default=0)) + 1, dtype=np.uint16)
        for inst, cls in self.gt_classes.items():
            lut[inst] = cls
        out = lut[self.gt_instances]
        return out.astype(np.uint8) if out.max(initial=0) < 256 else out
