"""Slice-wise volume inference: batched 2D / 2.5D Mask R-CNN, 3D instance linking, results in the input geometry.

MONAI plumbing (`SliceWiseInferer`, `SliceWisePredictd`) lives in `medmrcnn.inference.monai`, imported on demand.
"""

from medmrcnn.inference.config import PredictorConfig
from medmrcnn.inference.linking import (
    CellShape, LinkedInstance, link_instances_across_slices, mask_similarity, split_chain,
)
from medmrcnn.inference.predictor import SliceWisePredictor
from medmrcnn.inference.result import InstanceRecord, VolumeResult

__all__ = [
    "InstanceRecord", "LinkedInstance", "PredictorConfig", "SliceWisePredictor", "VolumeResult",
    "link_instances_across_slices", "mask_similarity", "CellShape", "split_chain",
]
