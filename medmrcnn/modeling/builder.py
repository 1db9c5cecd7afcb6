"""`build_model(cfg)`: a torchvision Mask R-CNN assembled for medical slices."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from medmrcnn.modeling.config import ModelConfig
from medmrcnn.modeling.point_head import BackboneWithImage, PointHead, PointRendRoIHeads, PyramidRPN

_STAGE_CHANNELS = {"resnet18": 64, "resnet34": 64, "resnet50": 256, "resnet101": 256}


class SliceTransform(GeneralizedRCNNTransform):
    """torchvision's batching transform, but at native resolution unless a size is configured.

    Intensity normalisation belongs to medmrcnn's preprocessing, so mean 0 / std 1 is used here.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        self.native = cfg.min_size is None
        c = cfg.in_channels
        super().__init__(
            min_size=cfg.min_size or 800, max_size=cfg.max_size or 1333,
            image_mean=[0.0] * c, image_std=[1.0] * c,
        )

    def resize(self, image, target=None):  # type: ignore[override]
        if self.native:
            return image, target
        return super().resize(image, target)


def _norm_layer(norm: str) -> type[nn.Module] | partial:
    if norm == "frozen_batch":
        return FrozenBatchNorm2d
    if norm == "group":
        return partial(nn.GroupNorm, 32)
    return nn.BatchNorm2d


def build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    """ResNet (first conv adapted to cfg.in_channels) + FPN over cfg.returned_layers."""
    body = getattr(resnet, cfg.backbone)(weights=None, norm_layer=_norm_layer(cfg.norm))
    if cfg.in_channels != 3:
        body.conv1 = nn.Conv2d(cfg.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
    stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][: cfg.trainable_layers]
    if cfg.trainable_layers == 5:
        stages.append("bn1")
    for name, p in body.named_parameters():
        if not any(name.startswith(s) for s in stages):
            p.requires_grad_(False)
    base = _STAGE_CHANNELS[cfg.backbone]
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(cfg.returned_layers)}
    in_channels_list = [base * 2 ** (k - 1) for k in cfg.returned_layers]
    # The point head also samples the slice itself; the pyramid (and every weight name) is the same.
    cls = BackboneWithImage if cfg.mask_refinement == "pointrend" else BackboneWithFPN
    return cls(body, return_layers, in_channels_list, cfg.fpn_channels)


def build_model(cfg: ModelConfig) -> MaskRCNN:
    """Mask R-CNN with an FPN backbone, built from torchvision components as configured.

    The returned module follows torchvision's contract: in training mode ``model(images, targets)`` returns a
    loss dict; in eval mode ``model(images)`` returns, per image, ``boxes: FloatTensor[N, 4]`` (xyxy px),
    ``labels: Int64Tensor[N]``, ``scores: FloatTensor[N]`` and ``masks: FloatTensor[N, 1, H, W]`` (probabilities).
    Each image is ``FloatTensor[C, H, W]`` with C = cfg.in_channels, already normalised by medmrcnn.transforms.
    """
    backbone = build_backbone(cfg)
    levels = [str(i) for i in range(len(cfg.returned_layers))]
    anchors = AnchorGenerator(cfg.resolved_anchor_sizes, (cfg.aspect_ratios,) * cfg.num_feature_levels)
    num_anchors = anchors.num_anchors_per_location()[0]
    c = cfg.fpn_channels
    box_pool = MultiScaleRoIAlign(featmap_names=levels, output_size=7, sampling_ratio=2)
    mask_pool = MultiScaleRoIAlign(featmap_names=levels, output_size=cfg.mask_resolution // 2, sampling_ratio=2)
    mask_head = MaskRCNNHeads(c, list(cfg.mask_head_channels), dilation=1)
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(c, num_anchors),
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(c * 7 * 7, cfg.box_representation_size),
        box_predictor=FastRCNNPredictor(cfg.box_representation_size, len(cfg.labels) + 1),
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.detections_per_image,
        mask_roi_pool=mask_pool,
        mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels[-1], cfg.mask_head_channels[-1], len(cfg.labels) + 1),
    )
    model.transform = SliceTransform(cfg)
    if cfg.mask_refinement == "pointrend":
        _add_point_head(model, cfg)
    return model


def _add_point_head(model: MaskRCNN, cfg: ModelConfig) -> None:
    """Swap in the point-refining RoI heads and an RPN that skips the "image" feature entry."""
    rpn = model.rpn
    model.rpn = PyramidRPN(
        rpn.anchor_generator, rpn.head, rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold,
        rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction,
        dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n), rpn.nms_thresh, rpn.score_thresh,
    )
    head = PointHead(cfg.fpn_channels + cfg.in_channels, len(cfg.labels) + 1, cfg.point_head_channels,
                     cfg.point_head_layers)
    model.roi_heads = PointRendRoIHeads.from_heads(
        model.roi_heads, point_head=head, fine_level="0", train_points=cfg.point_train_points,
        subdivision_points=cfg.point_subdivision_points, max_resolution=cfg.mask_max_resolution,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's parameters."""
    return next(model.parameters()).device
