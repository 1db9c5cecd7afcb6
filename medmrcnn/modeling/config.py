"""`ModelConfig`: every architectural choice of the network, serialisable to and from JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
NORMS = ("batch", "frozen_batch", "group")
MASK_REFINEMENTS = ("none", "pointrend")


def default_anchor_sizes(num_levels: int) -> tuple[tuple[int, ...], ...]:
    """Two anchor sizes per FPN level, spread geometrically from 8 px (cells, small lesions) to 384 px (organs)."""
    sizes = np.geomspace(8, 384, 2 * num_levels).round().astype(int)
    return tuple((int(sizes[2 * i]), int(sizes[2 * i + 1])) for i in range(num_levels))


@dataclass
class ModelConfig:
    """Architecture of the medical Mask R-CNN.

    Attributes:
        labels: foreground class names in id order (id 0 = background is implicit).
        backbone: ResNet depth, one of resnet18|34|50|101, always with an FPN.
        in_channels: 1 for a plain slice, or 2k+1 for 2.5D input (k neighbouring slices above and below).
        returned_layers: ResNet stages fed to the FPN (1..4); dropping stage 4 makes a much smaller model.
        fpn_channels: channels of every FPN level.
        norm: backbone normalisation: "batch" (train from scratch), "frozen_batch" (fine-tune pretrained), "group".
        trainable_layers: how many ResNet stages (counted from the top, 0..5) receive gradients.
        min_size, max_size: if both None the slice is used at native resolution (no 800-px upscaling);
            otherwise torchvision's resize rule applies.
        anchor_sizes: per FPN level (pool level included) the anchor sizes in pixels; None = default_anchor_sizes.
        aspect_ratios: anchor height/width ratios, the same at every level.
        box_representation_size: width of the two-layer box head.
        mask_head_channels: conv widths of the mask head.
        mask_resolution: side in pixels of predicted masks (RoIAlign output is half of it).
        mask_refinement: "none" (masks are the mask_resolution grid stretched over each box) or "pointrend"
            (a point head refines them up to one cell per slice pixel of the box; medmrcnn.modeling.point_head).
            Checkpoints written before this option existed load as "none".
        point_head_channels, point_head_layers: width and depth of the point head's MLP.
        point_train_points: points per RoI on which the point loss is computed in training.
        point_subdivision_points: points re-predicted per RoI and subdivision step at inference (at least 16 per
            row of the grid).
        mask_max_resolution: largest side of a refined mask grid (bounds memory and time for very large boxes).
        detections_per_image: maximum instances kept per slice (cells need hundreds).
        rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test: proposals kept at inference.
        box_score_thresh: minimum score kept by the network itself (the predictor applies its own threshold too).
        box_nms_thresh: per-class NMS IoU threshold.
        pixel_spacing_mm: in-plane pixel size the network was trained at; the predictor resamples slices to it
            (and maps results back to the original grid). None = use every image at its native pixel grid.
        intensity: the intensity preset the network was trained with (see medmrcnn.transforms):
            "ct:<window>" (e.g. "ct:soft_tissue"), "percentile", or "auto" (chosen from the training images'
            modality when training starts; checkpoints store the concrete preset, never "auto").
    """

    labels: tuple[str, ...] = ("lesion",)
    backbone: str = "resnet50"
    in_channels: int = 1
    returned_layers: tuple[int, ...] = (1, 2, 3, 4)
    fpn_channels: int = 256
    norm: str = "batch"
    trainable_layers: int = 5
    min_size: int | None = None
    max_size: int | None = None
    anchor_sizes: tuple[tuple[int, ...], ...] | None = None
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_representation_size: int = 1024
    mask_head_channels: tuple[int, ...] = (256, 256, 256, 256)
    mask_resolution: int = 28
    mask_refinement: str = "none"
    point_head_channels: int = 256
    point_head_layers: int = 3
    point_train_points: int = 392
    point_subdivision_points: int = 784
    mask_max_resolution: int = 448
    detections_per_image: int = 100
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    pixel_spacing_mm: float | None = None
    intensity: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        self.returned_layers = tuple(int(x) for x in self.returned_layers)
        self.aspect_ratios = tuple(float(x) for x in self.aspect_ratios)
        self.mask_head_channels = tuple(int(x) for x in self.mask_head_channels)
        if self.anchor_sizes is not None:
            self.anchor_sizes = tuple(tuple(int(s) for s in lvl) for lvl in self.anchor_sizes)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}; got {self.backbone!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
        if self.in_channels < 1 or self.in_channels % 2 == 0:
            raise ValueError(f"in_channels must be 1 or 2k+1 (2.5D); got {self.in_channels}")
        if not self.returned_layers or not set(self.returned_layers) <= {1, 2, 3, 4}:
            raise ValueError(f"returned_layers must be a non-empty subset of 1..4; got {self.returned_layers}")
        if not 0 <= self.trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be 0..5; got {self.trainable_layers}")
        if (self.min_size is None) != (self.max_size is None):
            raise ValueError("min_size and max_size must both be set (resize) or both be None (native resolution)")
        if self.mask_resolution % 2 or self.mask_resolution < 8:
            raise ValueError(f"mask_resolution must be even and >= 8; got {self.mask_resolution}")
        if self.mask_refinement not in MASK_REFINEMENTS:
            raise ValueError(f"mask_refinement must be one of {MASK_REFINEMENTS}; got {self.mask_refinement!r}")
        if min(self.point_head_channels, self.point_head_layers, self.point_train_points,
               self.point_subdivision_points) < 1:
            raise ValueError("point_head_channels, point_head_layers and the point counts must be positive")
        if self.mask_max_resolution < self.mask_resolution:
            raise ValueError(f"mask_max_resolution must be >= mask_resolution ({self.mask_resolution}); "
                             f"got {self.mask_max_resolution}")
        if self.anchor_sizes is not None and len(self.anchor_sizes) != self.num_feature_levels:
            raise ValueError(
                f"anchor_sizes has {len(self.anchor_sizes)} levels; the FPN has {self.num_feature_levels}"
            )
        if self.pixel_spacing_mm is not None and self.pixel_spacing_mm <= 0:
            raise ValueError(f"pixel_spacing_mm must be positive; got {self.pixel_spacing_mm}")
        if self.anchor_sizes is not None and len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError("every FPN level needs the same number of anchor sizes")

    @property
    def context_slices(self) -> int:
        """k: the neighbouring slices on each side that a 2.5D model sees."""
        return (self.in_channels - 1) // 2

    @property
    def num_feature_levels(self) -> int:
        """FPN outputs: one per returned stage plus the max-pool level."""
        return len(self.returned_layers) + 1

    @property
    def resolved_anchor_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Anchor sizes actually used (the default when anchor_sizes is None)."""
        return self.anchor_sizes or default_anchor_sizes(self.num_feature_levels)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Inverse of to_dict; unknown keys are an error so typos do not pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)
