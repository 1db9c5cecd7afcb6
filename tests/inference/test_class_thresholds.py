"""Per-class score / mask thresholds (what `medmrcnn calibrate` stores) reach the post-processing and the predictor."""

import torch

from medmrcnn.inference.config import PredictorConfig, calibrated_config
from medmrcnn.inference.detector import RawDetections
from medmrcnn.inference.postprocess import to_slice_instances

M = 28


def _dets() -> RawDetections:
    soft = torch.full((M, M), 0.45)  # a mask that passes a 0.4 mask threshold only
    boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0], [20.0, 2.0, 30.0, 12.0], [2.0, 20.0, 12.0, 30.0]])
    return RawDetections(boxes, torch.tensor([0.9, 0.35, 0.35]), torch.tensor([1, 1, 2]),
                         torch.stack([torch.ones(M, M), torch.ones(M, M), soft]))


def test_class_thresholds_replace_the_global_ones_for_their_class_only():
    plain = to_slice_instances(_dets(), (40, 40), score_threshold=0.5, mask_threshold=0.5)
    assert plain.labels.tolist() == [1]
    per_class = to_slice_instances(_dets(), (40, 40), score_threshold=0.5, mask_threshold=0.5,
                                   class_thresholds={2: (0.3, 0.4)})
    assert sorted(per_class.labels.tolist()) == [1, 2]  # class 1's low-scoring detection still dropped
    too_strict_mask = to_slice_instances(_dets(), (40, 40), score_threshold=0.5, mask_threshold=0.5,
                                         class_thresholds={2: (0.3, 0.5)})
    assert too_strict_mask.labels.tolist() == [1]


def test_calibrated_config_defaults_and_explicit_options():
    stored = {"score": 0.65, "mask": 0.4, "per_class": {"nucleus": {"score": 0.6, "mask": 0.45}}}
    cfg = calibrated_config(stored)
    assert (cfg.score_threshold, cfg.mask_threshold) == (0.65, 0.4)
    assert cfg.class_score_thresholds == {"nucleus": 0.6} and cfg.class_mask_thresholds == {"nucleus": 0.45}
    user = calibrated_config(stored, score_threshold=0.2)  # the user's --score-threshold wins for every class
    assert user.score_threshold == 0.2 and user.class_score_thresholds == {}
    assert calibrated_config(None) == PredictorConfig()
    assert PredictorConfig.from_dict(cfg.to_dict()) == cfg
