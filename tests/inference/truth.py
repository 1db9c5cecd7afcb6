"""Results built from exact ground truth (perfect per-slice detections), for tests of linking and writers."""

from __future__ import annotations

from medmrcnn.inference import PredictorConfig, VolumeResult
from medmrcnn.inference.assemble import assemble_result
from medmrcnn.structures import SliceInstances
from medmrcnn.synthetic import Phantom


def result_from_truth(phantom: Phantom, cfg: PredictorConfig | None = None, score: float = 0.9) -> VolumeResult:
    """The VolumeResult the predictor would give if the network found every ground-truth instance on every slice."""
    cfg = cfg or PredictorConfig(min_voxels=0)
    scores = {i: score for i in phantom.gt_classes}
    slices = [SliceInstances.from_label_image(s, phantom.gt_classes, scores) for s in phantom.gt_instances]
    result = assemble_result(phantom.volume, slices, phantom.labels, cfg)
    result.metadata["intensity"] = "ct:soft_tissue" if phantom.volume.modality == "CT" else "percentile"
    return result
