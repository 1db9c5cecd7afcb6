"""The parts of a torchvision Mask R-CNN after the backbone, run on boxes we choose: the engine of prompted segmentation.

A slice's FPN features are computed once (`compute_slice_features`) and kept in a `FeatureCache`; a prompt then runs
only the RPN (for clicks), the box head (class scores and refined boxes of given proposals) and the mask head.
All boxes here are xyxy px (exclusive x1/y1) on the original slice grid; conversion to the network's grid is internal.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import resize_boxes

from medmrcnn.transforms.resample import resize_slices


@dataclass
class SliceFeatures:
    """A slice as the heads need it.

    Attributes:
        features: FPN maps, each FloatTensor[1, C, h, w], on the model's device.
        image_list: the transformed slice (its size drives the RPN anchors and RoIAlign scales).
        image_size: (height, width) of the original slice.
        net_size: (height, width) the slice was resampled to (the model's training pixel size).
        proposals: the RPN's proposals on the original grid once `rpn_proposals` computed them (kept with the
            features: they depend on nothing else).
    """

    features: OrderedDict[str, torch.Tensor]
    image_list: ImageList
    image_size: tuple[int, int]
    net_size: tuple[int, int]
    proposals: torch.Tensor | None = None

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Original pixels per network-input pixel along x and y."""
        return self.image_size[1] / self.net_size[1], self.image_size[0] / self.net_size[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the feature maps and the transformed slice, in bytes."""
        tensors = [*self.features.values(), self.image_list.tensors]
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def _to_model(self, boxes: torch.Tensor) -> torch.Tensor:
        """Original-grid boxes -> the grid of the transformed image the heads see."""
        sx, sy = self.scale_xy
        b = boxes.to(torch.float32) / torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=boxes.device)
        seen = tuple(self.image_list.image_sizes[0])
        return resize_boxes(b, self.net_size, seen) if seen != self.net_size else b

    def _from_model(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes on the transformed image's grid -> the original slice grid."""
        sx, sy = self.scale_xy
        seen = tuple(self.image_list.image_sizes[0])
        b = resize_boxes(boxes, seen, self.net_size) if seen != self.net_size else boxes
        return b * torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=boxes.device)


def compute_slice_features(model: nn.Module, image: np.ndarray, net_size: tuple[int, int]) -> SliceFeatures:
    """Backbone + FPN of one normalised (C, H, W) float32 slice, resampled to `net_size` (the training pixel size)."""
    device = next(model.parameters()).device
    h, w = int(image.shape[-2]), int(image.shape[-1])
    with torch.inference_mode():
        x = resize_slices(torch.from_numpy(np.ascontiguousarray(image))[None].to(device), net_size)
        image_list, _ = model.transform([x[0]])
        features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    return SliceFeatures(features, image_list, (h, w), (int(net_size[0]), int(net_size[1])))


def rpn_proposals(model: nn.Module, feats: SliceFeatures) -> torch.Tensor:
    """FloatTensor[P, 4]: the RPN's proposals for the slice (after its NMS), on the original grid, on the CPU;
    computed once per slice and kept in `feats`."""
    if feats.proposals is None:
        with torch.inference_mode():
            proposals, _ = model.rpn(feats.image_list, feats.features)
        feats.proposals = feats._from_model(proposals[0].float()).cpu()
    return feats.proposals


def classify_boxes(model: nn.Module, feats: SliceFeatures, boxes: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The box head on given proposals.

    Args:
        boxes: FloatTensor[N, 4] proposals on the original grid.
    Returns:
        probs: FloatTensor[N, K+1] class probabilities (column 0 = background) and
        refined: FloatTensor[N, K+1, 4] each class's regressed box, clipped to the slice, on the original grid (CPU).
    """
    heads = model.roi_heads
    device = next(model.parameters()).device
    props = feats._to_model(boxes.to(device))
    sizes = feats.image_list.image_sizes
    with torch.inference_mode():
        x = heads.box_roi_pool(feats.features, [props], sizes)
        logits, regression = heads.box_predictor(heads.box_head(x))
        refined = heads.box_coder.decode(regression, [props])  # [N, K+1, 4]
    probs = F.softmax(logits.float(), -1).cpu()
    refined = feats._from_model(refined.float().reshape(-1, 4)).reshape(refined.shape).cpu()
    h, w = feats.image_size
    refined[..., 0::2] = refined[..., 0::2].clamp(0, w)
    refined[..., 1::2] = refined[..., 1::2].clamp(0, h)
    return probs, refined


def mask_probabilities(model: nn.Module, feats: SliceFeatures, boxes: torch.Tensor, labels: torch.Tensor
                       ) -> torch.Tensor:
    """FloatTensor[N, M, M] (CPU): the mask head's probabilities for class labels[i] inside boxes[i] (original grid)."""
    heads = model.roi_heads
    device = next(model.parameters()).device
    b = feats._to_model(boxes.to(device))
    with torch.inference_mode():
        x = heads.mask_head(heads.mask_roi_pool(feats.features, [b], feats.image_list.image_sizes))
        logits = heads.mask_predictor(x)
    idx = torch.arange(len(boxes), device=logits.device)
    return logits[idx, labels.to(logits.device)].float().sigmoid().cpu()


class FeatureCache:
    """FPN features of the slices in use, least recently used dropped first beyond `max_bytes`.

    Keys are (image key, slice index); every entry belongs to one checkpoint key, and asking with another
    checkpoint key (a fine-tuned model was published) empties the cache. Safe to share between threads.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, SliceFeatures] = OrderedDict()
        self._model_key: Hashable = None
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model_key: Hashable, key: Hashable, compute: Callable[[], SliceFeatures]) -> SliceFeatures:
        """The features stored under `key` for checkpoint `model_key`, computing (and storing) them when missing."""
        with self._lock:
            if model_key != self._model_key:
                self._entries.clear()
                self._bytes = 0
                self._model_key = model_key
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        feats = compute()  # outside the lock: other slices and images stay available meanwhile
        with self._lock:
            if model_key != self._model_key:  # the checkpoint changed while computing: do not keep stale features
                return feats
            if key not in self._entries:
                self._entries[key] = feats
                self._bytes += feats.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.nbytes
        return feats
