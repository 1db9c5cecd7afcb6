"""medmrcnn: slice-wise Mask R-CNN instance segmentation for CT/MR volumes and microscopy.

Data contract (docs/data-contract.md): arrays are (z, y, x); `Volume.affine` maps voxel (i, j, k, 1) = (x, y, z, 1)
to patient LPS millimetres; boxes are xyxy in pixels; label maps use 0 for background.
"""

__version__ = "0.1.0"

from medmrcnn.errors import (  # noqa: E402
    CheckpointError,
    DataError,
    ExportError,
    GeometryMismatchError,
    LabelConfigError,
    MedMRCNNError,
    VolumeLoadError,
)
from medmrcnn.labels import LabelMap  # noqa: E402
from medmrcnn.volume import Volume  # noqa: E402

__all__ = [
    "CheckpointError", "DataError", "ExportError", "GeometryMismatchError", "LabelConfigError", "LabelMap",
    "MedMRCNNError", "Volume", "VolumeLoadError", "__version__",
]
