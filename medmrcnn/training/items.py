"""`AnnotatedVolume`: an image with instance ground truth, the unit every training data source produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medmrcnn.volume import Volume


@dataclass
class AnnotatedVolume:
    """One training/validation item on the data contract.

    Attributes:
        volume: the image (z, y, x); a 2D image has z == 1.
        gt_instances: integer (z, y, x) instance ids on the image grid, 0 = background.
        gt_classes: instance id -> class id (1..N of the model's labels). Ids missing here are ignored.
        name: where it came from (file path or generator seed), used in messages and reports.
        per_slice_instances: True when instances are per-slice connected components of a semantic label map
            (then 3D lesions for lesion-wise metrics are the 3D connected components of the class map).
    """

    volume: Volume
    gt_instances: np.ndarray
    gt_classes: dict[int, int]
    name: str
    per_slice_instances: bool = False

    def class_map(self) -> np.ndarray:
        """uint8/uint16 (z, y, x) semantic label map derived from the instances (unmapped ids -> 0)."""
        top = int(self.gt_instances.max(initial=0))
        lut = np.zeros(max(top, max(self.gt_classes, default=0)) + 1, dtype=np.uint16)
        for inst, cls in self.gt_classes.items():
            lut[inst] = cls
        out = lut[self.gt_instances]
        return out.astype(np.uint8) if out.max(initial=0) < 256 else out

    def lesions(self) -> tuple[np.ndarray, dict[int, int]]:
        """3D ground-truth objects (instance map, id -> class id) for lesion-wise metrics.

        Instance maps are used as they are; per-slice instances are regrouped into 3D connected components
        (6-connected) of each class.
        """
        if not self.per_slice_instances:
            return self.gt_instances, self.gt_classes
        class_map = self.class_map()
        out = np.zeros(class_map.shape, dtype=np.uint32)
        classes: dict[int, int] = {}
        for c in np.unique(class_map):
            if c == 0:
                continue
            comp, n = ndimage.label(class_map == c)
            out[comp > 0] = comp[comp > 0] + len(classes)
            classes.update({len(classes) + i: int(c) for i in range(1, n + 1)})
        return out, classes
