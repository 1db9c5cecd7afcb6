"""PointRend-style mask refinement for torchvision's Mask R-CNN (Kirillov et al., "PointRend: Image
Segmentation as Rendering", CVPR 2020).

The 28 x 28 mask head draws every object on a grid stretched over its box, so a wall thinner than one grid cell
cannot be drawn. Here a small MLP (the point head) re-predicts the mask at chosen points from features sampled at
those points:

- fine features: the finest FPN level (stride 4) and the slice's own intensities (stride 1; PointRend uses P2
  alone, but a 1.5 mm wall at 0.7 mm pixels is narrower than one P2 cell),
- the coarse mask logit of the object's class, interpolated at the point.

Training adds a point loss to the multi-task loss, on points drawn where the coarse mask is uncertain (oversampled
then chosen by importance, plus uniform ones). Inference subdivides: starting from the coarse grid, the logits are
doubled in resolution and the most uncertain cells re-predicted, until the grid has at least one cell per slice
pixel of the box (bounded by a maximum side), so masks come out at the slice's resolution inside each box.

Points are (x, y) in [0, 1] relative to a box; (0, 0) is the box's top-left edge. Boxes are xyxy in pixels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork

IMAGE_KEY = "image"
# Training points: oversampled k-fold, the most uncertain `importance` of them kept, the rest uniform (the paper's).
OVERSAMPLE = 3
IMPORTANCE = 0.75


class BackboneWithImage(BackboneWithFPN):
    """ResNet + FPN whose feature dict also carries the input batch under "image" (stride 1) for the point head."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """FPN levels "0".."L" plus "image": FloatTensor[B, C, H, W], the (padded) input."""
        features = super().forward(x)
        features[IMAGE_KEY] = x
        return features


class PyramidRPN(RegionProposalNetwork):
    """torchvision's RPN, run on the FPN levels only (the "image" entry is for the point head)."""

    def forward(self, images, features, targets=None):  # type: ignore[override]
        """As RegionProposalNetwork.forward, ignoring feature entries that are not pyramid levels."""
        pyramid = OrderedDict((k, v) for k, v in features.items() if k != IMAGE_KEY)
        return super().forward(images, pyramid, targets)


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples FloatTensor[N, C, P] of box-relative maps [N, C, H, W] at points [N, P, 2] (x, y in 0..1)."""
    return F.grid_sample(maps, 2 * points[:, :, None, :] - 1, align_corners=False)[..., 0]


def uncertain_training_points(coarse_logits: torch.Tensor, num_points: int) -> torch.Tensor:
    """FloatTensor[N, P, 2] training points for coarse logits [N, 1, M, M]: mostly where |logit| is small."""
    n, device = coarse_logits.shape[0], coarse_logits.device
    candidates = torch.rand(n, num_points * OVERSAMPLE, 2, device=device)
    uncertainty = -point_sample(coarse_logits, candidates)[:, 0].abs()
    k = int(IMPORTANCE * num_points)
    idx = uncertainty.topk(k, dim=1).indices
    chosen = torch.gather(candidates, 1, idx[:, :, None].expand(-1, -1, 2))
    uniform = torch.rand(n, num_points - k, 2, device=device)
    return torch.cat([chosen, uniform], dim=1)


def most_uncertain_cells(logits: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For logits [N, 1, R, R]: flat indices Int64Tensor[N, P] of the P cells with the smallest |logit| and their
    centres FloatTensor[N, P, 2] as box-relative points."""
    r = logits.shape[-1]
    idx = (-logits.flatten(1).abs()).topk(min(num_points, r * r), dim=1).indices
    points = torch.stack([(idx % r).float() + 0.5, torch.div(idx, r, rounding_mode="floor").float() + 0.5], dim=-1)
    return idx, points / r


class PointHead(nn.Module):
    """MLP over per-point features; the coarse logit is appended to every layer's input (as in PointRend).

    Input: fine FloatTensor[N, C, P] and coarse FloatTensor[N, 1, P]; output: per-class logits [N, K, P].
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.fcs = nn.ModuleList()
        width = in_channels
        for _ in range(layers):
            self.fcs.append(nn.Conv1d(width + 1, channels, kernel_size=1))
            width = channels
        self.predictor = nn.Conv1d(width + 1, num_classes, kernel_size=1)
        for fc in self.fcs:
            nn.init.kaiming_normal_(fc.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Per-class point logits FloatTensor[N, K, P]."""
        x = fine
        for fc in self.fcs:
            x = F.relu(fc(torch.cat([x, coarse], dim=1)))
        return self.predictor(torch.cat([x, coarse], dim=1))


class PointRendRoIHeads(RoIHeads):
    """torchvision's RoIHeads (boxes + 28 x 28 mask head) with a point head that refines the masks.

    Same contract as RoIHeads: in training a loss dict (adding "loss_mask_point"); in eval, per image, boxes,
    labels, scores and masks FloatTensor[N, 1, R, R] (probabilities over each box; R = M * 2^k >= the box's
    longest side in pixels, at most `max_resolution`, the same R for all boxes of an image).
    """

    def __init__(self, *args, point_head: PointHead, fine_level: str, train_points: int, subdivision_points: int,
                 max_resolution: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.point_head = point_head
        self.fine_level = fine_level
        self.train_points = train_points
        self.subdivision_points = subdivision_points
        self.max_resolution = max_resolution

    @classmethod
    def from_heads(cls, heads: RoIHeads, **point_options) -> "PointRendRoIHeads":
        """The same box and mask heads as `heads` (a torchvision RoIHeads with a mask branch), plus a point head."""
        return cls(
            heads.box_roi_pool, heads.box_head, heads.box_predictor,
            heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool, mask_head=heads.mask_head, mask_predictor=heads.mask_predictor,
            **point_options,
        )

    def _point_features(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                        points: torch.Tensor) -> torch.Tensor:
        """Fine features FloatTensor[N, C, P] at box-relative `points` [N, P, 2] of the boxes of every image."""
        image = features[IMAGE_KEY]
        size = torch.tensor([image.shape[-1], image.shape[-2]], dtype=points.dtype, device=points.device)
        out, start = [], 0
        for i, b in enumerate(boxes):
            pts = points[start:start + len(b)]
            start += len(b)
            xy = b[:, None, :2] + pts * (b[:, None, 2:] - b[:, None, :2])  # pixels of the padded batch
            grid = (2 * xy / size - 1).reshape(1, -1, 1, 2)
            per_map = [F.grid_sample(features[k][i:i + 1], grid, align_corners=False)[0, :, :, 0]
                       for k in (self.fine_level, IMAGE_KEY)]
            out.append(torch.cat(per_map).reshape(-1, len(b), pts.shape[1]).transpose(0, 1))
        return torch.cat(out)

    def _coarse_logits(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                       image_shapes: list[tuple[int, int]], labels: torch.Tensor) -> torch.Tensor:
        """Coarse mask logits FloatTensor[N, 1, M, M] of each box's class `labels` [N]."""
        x = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        return x[torch.arange(len(labels), device=labels.device), labels][:, None]

    def point_loss(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], coarse: torch.Tensor,
                   labels: torch.Tensor, gt_masks: list[torch.Tensor], gt_index: list[torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy of the point head at uncertain points against the matched ground-truth masks."""
        if coarse.shape[0] == 0:
            return coarse.sum() * 0 + sum(p.sum() * 0 for p in self.point_head.parameters())
        with torch.no_grad():
            points = uncertain_training_points(coarse.detach(), self.train_points)
            truth = []
            start = 0
            for b, masks, idx in zip(boxes, gt_masks, gt_index):
                pts = points[start:start + len(b)]
                start += len(b)
                h, w = masks.shape[-2:]
                xy = b[:, None, :2] + pts * (b[:, None, 2:] - b[:, None, :2])
                ix = xy[..., 0].floor().long().clamp(0, w - 1)
                iy = xy[..., 1].floor().long().clamp(0, h - 1)
                truth.append(masks[idx[:, None], iy, ix].float())
            truth = torch.cat(truth)
        logits = self.point_head(self._point_features(features, boxes, points), point_sample(coarse, points))
        logits = logits[torch.arange(len(labels), device=labels.device), labels]
        return F.binary_cross_entropy_with_logits(logits, truth)

    def refine(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], coarse: torch.Tensor,
               labels: torch.Tensor, refined: torch.Tensor) -> list[torch.Tensor]:
        """Adaptive subdivision of coarse logits [N, 1, M, M]: per image, logits [Ni, 1, R, R] (see class doc).

        Only the boxes where `refined` [N] (bool) is set are subdivided and decide R; the others are resampled
        bilinearly to R (detections the caller will drop cost nothing).
        """
        out, start = [], 0
        for i, b in enumerate(boxes):
            n = len(b)
            base, lab, chosen = coarse[start:start + n], labels[start:start + n], refined[start:start + n]
            start += n
            sel = torch.nonzero(chosen).flatten()
            logits = base[sel]
            side = float((b[sel, 2:] - b[sel, :2]).max()) if len(sel) else 0.0
            target = min(side, self.max_resolution)
            feats = {k: features[k][i:i + 1] for k in (self.fine_level, IMAGE_KEY)}
            rows = torch.arange(len(sel), device=b.device)
            while len(sel) and logits.shape[-1] < target and logits.shape[-1] * 2 <= self.max_resolution:
                logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
                r = logits.shape[-1]
                # Boundaries grow with the side, so the point budget does too (at least 16 points per row).
                idx, points = most_uncertain_cells(logits, max(self.subdivision_points, 16 * r))
                fine = self._point_features(feats, [b[sel]], points)
                new = self.point_head(fine, point_sample(base[sel], points))[rows, lab[sel]]
                logits = logits.flatten(1).scatter(1, idx, new).view(len(sel), 1, r, r)
            r = logits.shape[-1]
            full = base.clone() if r == base.shape[-1] else F.interpolate(base, size=(r, r), mode="bilinear",
                                                                          align_corners=False)
            full[sel] = logits
            out.append(full)
        return out

    def forward(self, features, proposals, image_shapes, targets=None, refine_min_score: float = 0.0
                ):  # type: ignore[override]
        """As RoIHeads.forward for a Mask R-CNN, with point-refined masks (see class doc); in eval, detections
        scoring below `refine_min_score` (ones the caller drops) keep their coarse masks, resampled."""
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            pos = [torch.where(lab > 0)[0] for lab in labels]
            boxes = [p[k] for p, k in zip(proposals, pos)]
            gt_index = [m[k] for m, k in zip(matched_idxs, pos)]
            gt_masks = [t["masks"] for t in targets]
            pos_labels = torch.cat([lab[k] for lab, k in zip(labels, pos)])
            all_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
            coarse = all_logits[torch.arange(len(pos_labels), device=pos_labels.device), pos_labels][:, None]
            return [], {
                "loss_classifier": loss_classifier,
                "loss_box_reg": loss_box_reg,
                "loss_mask": maskrcnn_loss(all_logits, boxes, gt_masks, [t["labels"] for t in targets], gt_index),
                "loss_mask_point": self.point_loss(features, boxes, coarse, pos_labels, gt_masks, gt_index),
            }
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        flat_labels = torch.cat(labels)
        coarse = self._coarse_logits(features, boxes, image_shapes, flat_labels)
        refined = self.refine(features, boxes, coarse, flat_labels, torch.cat(scores) >= refine_min_score)
        return [{"boxes": b, "labels": lab, "scores": s, "masks": r.sigmoid()}
                for b, lab, s, r in zip(boxes, labels, scores, refined)], {}

