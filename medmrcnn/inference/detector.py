"""Running the torchvision Mask R-CNN on a batch of slices, with optional flip test-time augmentation.

The network's own post-processing pastes every candidate's mask into a full-frame float image
(N x H x W per slice, hundreds of MB for a batch of 512 px slices with many candidates). We stop one step
earlier and keep each mask as the M x M probability grid relative to its box; `postprocess` pastes it
straight into a small crop of the original slice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import box_iou

from medmrcnn.modeling.point_head import PointRendRoIHeads


@dataclass
class RawDetections:
    """Detections on one slice in the network's input grid.

    Attributes:
        boxes: FloatTensor[N, 4] xyxy px (exclusive x1/y1) in the grid the network saw.
        scores: FloatTensor[N].
        labels: Int64Tensor[N] class ids 1..C.
        mask_probs: FloatTensor[N, M, M] mask probabilities covering each box edge to edge (M = the model's
            mask_resolution, or larger with mask refinement: up to one cell per pixel of the largest box).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    mask_probs: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> "RawDetections":
        """The same detections on another device, as float32."""
        return RawDetections(self.boxes.to(device, torch.float32), self.scores.to(device, torch.float32),
                             self.labels.to(device), self.mask_probs.to(device, torch.float32))

    def select(self, keep: torch.Tensor) -> "RawDetections":
        """Detections picked by an index or boolean tensor."""
        return RawDetections(self.boxes[keep], self.scores[keep], self.labels[keep], self.mask_probs[keep])

    def flipped(self, axis: str, size: tuple[int, int]) -> "RawDetections":
        """Detections mirrored along "x" (columns) or "y" (rows) of an image of size (height, width)."""
        b = self.boxes.clone()
        if axis == "x":
            b[:, 0], b[:, 2] = size[1] - self.boxes[:, 2], size[1] - self.boxes[:, 0]
            m = self.mask_probs.flip(-1)
        else:
            b[:, 1], b[:, 3] = size[0] - self.boxes[:, 3], size[0] - self.boxes[:, 1]
            m = self.mask_probs.flip(-2)
        return RawDetections(b, self.scores, self.labels, m)


def run_detector(model: nn.Module, images: torch.Tensor, refine_min_score: float = 0.0) -> list[RawDetections]:
    """Per-slice detections of a torchvision Mask R-CNN (eval mode) for FloatTensor[B, C, H, W] images.

    Runs transform -> backbone -> rpn -> roi_heads exactly as torchvision does, then rescales boxes to the input
    grid but leaves masks as M x M box-relative probabilities (see module docstring). With a point-refining model
    only detections scoring at least `refine_min_score` are refined (the others keep their coarse masks).
    """
    size = (int(images.shape[-2]), int(images.shape[-1]))
    image_list, _ = model.transform(list(images))
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features)
    extra = {"refine_min_score": refine_min_score} if isinstance(model.roi_heads, PointRendRoIHeads) else {}
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes, **extra)
    out = []
    for det, net_size in zip(detections, image_list.image_sizes):
        boxes = resize_boxes(det["boxes"], net_size, size) if tuple(net_size) != size else det["boxes"]
        out.append(RawDetections(boxes, det["scores"], det["labels"], det["masks"][:, 0]))
    return out


def run_detector_tta(model: nn.Module, images: torch.Tensor, flips: tuple[str, ...], iou: float,
                     refine_min_score: float = 0.0) -> list[RawDetections]:
    """`run_detector` on the images and on each flipped copy ("x", "y"), merged per slice by `merge_views`.

    A merged score is a mean over views, so any merged detection reaching `refine_min_score` has a refined member.
    """
    views = [run_detector(model, images, refine_min_score)]
    size = (int(images.shape[-2]), int(images.shape[-1]))
    for axis in flips:
        dim = -1 if axis == "x" else -2
        views.append([d.flipped(axis, size) for d in run_detector(model, images.flip(dim), refine_min_score)])
    if len(views) == 1:
        return views[0]
    return [merge_views([v[i] for v in views], iou) for i in range(len(images))]


def _resample_masks(mask_probs: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Mask grids [N, M, M] covering boxes `src` [N, 4] resampled onto boxes `dst` [N, 4] (zero outside src)."""
    n, m = mask_probs.shape[0], mask_probs.shape[-1]
    t = (torch.arange(m, dtype=torch.float32, device=mask_probs.device) + 0.5) / m
    xs = dst[:, 0:1] + t[None] * (dst[:, 2:3] - dst[:, 0:1])
    ys = dst[:, 1:2] + t[None] * (dst[:, 3:4] - dst[:, 1:2])
    gx = 2 * (xs - src[:, 0:1]) / (src[:, 2:3] - src[:, 0:1]).clamp(min=1e-6) - 1
    gy = 2 * (ys - src[:, 1:2]) / (src[:, 3:4] - src[:, 1:2]).clamp(min=1e-6) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(mask_probs[:, None], grid.view(n, m, m, 2), align_corners=False)[:, 0]


def merge_views(views: list[RawDetections], iou: float) -> RawDetections:
    """Merge detections of one slice from several test-time views into one set.

    Detections of the same class whose boxes overlap by at least `iou` are one object: the highest-scoring one
    seeds the group, the box is the score-weighted mean, the score is the sum over members divided by the number
    of views (an object seen in one view of three keeps a third of its score), and the mask is the mean of the
    members' masks resampled onto the merged box. Deterministic: ties keep the earlier view's detection first.
    """
    n_views = len(views)
    m = max(v.mask_probs.shape[-1] for v in views)  # refined masks of different views may differ in size
    grids = [v.mask_probs if v.mask_probs.shape[-1] == m else
             F.interpolate(v.mask_probs[:, None], size=(m, m), mode="bilinear", align_corners=False)[:, 0]
             for v in views]
    allv = RawDetections(*(torch.cat([getattr(v, f) for v in views]) for f in ("boxes", "scores", "labels")),
                         torch.cat(grids))
    if len(allv) == 0:
        return allv
    order = torch.sort(allv.scores, descending=True, stable=True).indices
    allv = allv.select(order)
    same = box_iou(allv.boxes, allv.boxes) >= iou
    same &= allv.labels[:, None] == allv.labels[None, :]
    taken = torch.zeros(len(allv), dtype=torch.bool, device=allv.boxes.device)
    boxes, scores, labels, masks = [], [], [], []
    for i in range(len(allv)):
        if taken[i]:
            continue
        members = torch.nonzero(same[i] & ~taken).flatten()
        taken[members] = True
        w = allv.scores[members]
        box = (allv.boxes[members] * w[:, None]).sum(0) / w.sum().clamp(min=1e-6)
        grids = _resample_masks(allv.mask_probs[members], allv.boxes[members], box.expand(len(members), 4))
        boxes.append(box)
        scores.append(w.sum() / n_views)
        labels.append(allv.labels[i])
        masks.append(grids.mean(0))
    return RawDetections(torch.stack(boxes), torch.stack(scores).clamp(max=1.0), torch.stack(labels),
                         torch.stack(masks))
