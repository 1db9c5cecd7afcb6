"""Prompted segmentation: a box or clicks in, the one object they point at out (3D, or 2D for single images).

    box   -> the box is the proposal of the box and mask heads on each slice it covers (a one-slice box seeds
             propagation like a click);
    click -> among the RPN's proposals containing the click, classified by the box head at a low score threshold,
             the best candidate whose mask covers the click and no background click; then followed slice by
             slice (the previous slice's box is the next slice's proposal) until the object ends;
    background clicks -> candidates touching them are passed over, and what still touches them is cut away.

Backbone features come from a `FeatureCache`, so a second prompt on the same slices runs the heads only.
Coordinates are voxel indices (z, y, x) of the volume (docs/data-contract.md); viewers' (i, j, k) orders are
converted by their adapters (the MONAI Label plugin).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torchvision.ops import batched_nms, box_iou

from medmrcnn.errors import DataError
from medmrcnn.inference.measure import measure_instances
from medmrcnn.inference.postprocess import paste_mask
from medmrcnn.inference.prompt_heads import (
    FeatureCache,
    SliceFeatures,
    classify_boxes,
    compute_slice_features,
    mask_probabilities,
    rpn_proposals,
)
from medmrcnn.inference.result import InstanceRecord, VolumeResult
from medmrcnn.labels import LabelMap
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.transforms import normalise_volume, resolve_intensity, slice_with_context
from medmrcnn.transforms.resample import inplane_size
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)

Voxel = tuple[int, int, int]


class PromptError(DataError):
    """A prompt does not fit the image or the model (a click outside it, an empty box, an unknown class)."""


@dataclass(frozen=True)
class Prompt:
    """What the clinician pointed at, in voxel indices of the image.

    Attributes:
        foreground: clicks (z, y, x) on the object(s) wanted.
        background: clicks (z, y, x) on what must not be in the result.
        box: (z0, y0, x0, z1, y1, x1), end exclusive like `InstanceRecord.bbox`; z1 = z0 + 1 for a box on one slice.
        class_ids: the classes the object may have (ids 1..C of the model); empty = any class.
    """

    foreground: tuple[Voxel, ...] = ()
    background: tuple[Voxel, ...] = ()
    box: tuple[int, int, int, int, int, int] | None = None
    class_ids: tuple[int, ...] = ()

    def validate(self, shape: tuple[int, int, int], num_classes: int) -> None:
        """PromptError naming the first thing that does not fit an image of `shape` and a model of `num_classes`."""
        if not self.foreground and self.box is None:
            raise PromptError("prompt: give a box or at least one foreground click")
        for kind, points in (("foreground", self.foreground), ("background", self.background)):
            for p in points:
                if len(p) != 3 or not all(0 <= int(v) < n for v, n in zip(p, shape)):
                    raise PromptError(f"{kind} click (z, y, x) {list(p)} is outside the image of shape {list(shape)}")
        if self.box is not None:
            z0, y0, x0, z1, y1, x1 = self.box
            if z1 < z0 or y1 < y0 or x1 < x0:
                raise PromptError(f"box {list(self.box)} is inverted (z0, y0, x0 must not exceed z1, y1, x1)")
            if z1 == z0 or y1 - y0 < 2 or x1 - x0 < 2:
                raise PromptError(f"box {list(self.box)} is empty (it must span a slice and 2 x 2 pixels)")
            if z0 < 0 or y0 < 0 or x0 < 0 or z1 > shape[0] or y1 > shape[1] or x1 > shape[2]:
                raise PromptError(f"box {list(self.box)} reaches outside the image of shape {list(shape)}")
        for c in self.class_ids:
            if not 1 <= c <= num_classes:
                raise PromptError(f"class id {c} is not one of the model's 1..{num_classes}")


@dataclass
class PromptConfig:
    """How prompts are answered.

    Attributes:
        candidate_score: lowest class probability of a candidate under a click (low: objects the automatic model
            rejected can still be picked).
        keep_score: lowest class probability for a slice of a box prompt or of a propagation to be kept; propagation
            stops at the first slice below it.
        mask_threshold: mask probability at or above which a pixel belongs to the object.
        min_overlap: propagation stops where the new slice's mask covers less than this fraction of the previous
            slice's mask (it would have jumped to another object).
        grow: the previous slice's box is enlarged by this fraction of its size on each side before it is used as
            the next slice's proposal (objects grow between slices; the box head tightens it again).
        max_candidates: candidates under a click whose masks are computed.
        intensity: intensity preset; None = the model's own.
    """

    candidate_score: float = 0.05
    keep_score: float = 0.3
    mask_threshold: float = 0.5
    min_overlap: float = 0.3
    grow: float = 0.15
    max_candidates: int = 12
    intensity: str | None = None

    def __post_init__(self) -> None:
        for name in ("candidate_score", "keep_score", "mask_threshold", "min_overlap", "grow"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"PromptConfig.{name} must be in [0, 1]; got {v}")
        if self.max_candidates < 1:
            raise ValueError(f"PromptConfig.max_candidates must be >= 1; got {self.max_candidates}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for results)."""
        return asdict(self)


@dataclass
class PromptResult:
    """The object a prompt selected, on the image grid.

    Attributes:
        mask: bool (z, y, x) on the volume's grid; all False when nothing was found.
        record: its measurements (id 1), or None when nothing was found.
        slice_scores: class probability on each slice it covers, by slice index.
        metadata: how it was found (mode, cache hits, seconds).
    """

    volume: Volume
    mask: np.ndarray
    record: InstanceRecord | None
    slice_scores: dict[int, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_volume_result(self, labels: LabelMap) -> VolumeResult:
        """The object as a one-instance VolumeResult (what the exporters and viewers' label writers take)."""
        ids = self.mask.astype(np.uint16)
        cls = ids * (self.record.class_id if self.record else 0)
        return VolumeResult(self.volume, ids, cls.astype(np.uint8 if labels.num_classes <= 256 else np.uint16),
                            [self.record] if self.record else [], labels, dict(self.metadata))


@dataclass
class _SliceObject:
    """The object on one slice: class probability, refined box (original grid) and full-slice bool mask."""

    score: float
    box: torch.Tensor
    mask: np.ndarray


class PromptSegmenter:
    """Answers box and click prompts with one Mask R-CNN whose slice features are cached between prompts.

    Args:
        model: a torchvision Mask R-CNN built by `medmrcnn.modeling.build_model` (switched to eval mode).
        model_cfg: its config (labels, 2.5D context, pixel size, intensity preset).
        cfg: prompt settings; None = PromptConfig() defaults.
        cache: where slice features are kept; share one between segmenters of the same server.
        model_key: identifies the checkpoint (e.g. path + modification time): a new key empties the cache.
    """

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, cfg: PromptConfig | None = None,
                 cache: FeatureCache | None = None, model_key: Hashable = None) -> None:
        self.model = model.eval()
        self.model_cfg = model_cfg
        self.cfg = cfg if cfg is not None else PromptConfig()
        self.cache = cache if cache is not None else FeatureCache()
        self.model_key = model_key if model_key is not None else id(model)
        self.labels = LabelMap.from_names(model_cfg.labels)
        self._image: tuple[Hashable, np.ndarray] | None = None

    def segment(self, volume: Volume, prompt: Prompt, image_key: Hashable = None) -> PromptResult:
        """The object `prompt` points at in `volume` (never modified).

        Args:
            image_key: identifies the image for the feature cache (e.g. path + modification time); None = the
                volume object itself (no reuse across loads).
        Raises:
            PromptError when the prompt does not fit the image or the model.
        """
        prompt.validate(volume.shape, len(self.labels.names))
        key = image_key if image_key is not None else id(volume)
        hits, misses = self.cache.hits, self.cache.misses
        objects: dict[int, _SliceObject] = {}
        class_id = 0
        avoid = self._background_objects(volume, key, prompt) if prompt.background else {}
        if prompt.box is not None:
            class_id = self._box_prompt(volume, key, prompt, objects, avoid)
            mode = "box"
        else:
            mode = "click"
        for click in prompt.foreground:
            z, y, x = click
            if z in objects and objects[z].mask[y, x]:
                continue  # already part of the object
            seed = self._object_at_click(volume, key, click, prompt, class_id, avoid)
            if seed is None:
                log.info("no object under the click %s", list(click))
                continue
            class_id, obj = seed
            found = {z: obj}
            self._propagate(volume, key, z, obj, class_id, found, avoid)
            for zz, o in found.items():
                if zz in objects:
                    objects[zz].mask |= o.mask
                    objects[zz].score = max(objects[zz].score, o.score)
                else:
                    objects[zz] = o
        mask = np.zeros(volume.shape, dtype=bool)
        for z, obj in objects.items():
            mask[z] = obj.mask
        mask = _cut_background(mask, prompt.background)
        if avoid and mask.any():
            mask = _without(mask, avoid)
        scores = {z: objects[z].score for z in sorted(objects) if mask[z].any()}
        record = None
        if scores:
            ids = mask.astype(np.uint8)
            record = measure_instances(ids, ndimage.find_objects(ids), [class_id], [list(scores.values())],
                                       volume, self.labels)[0]
        meta = {"mode": mode, "cache": {"hits": self.cache.hits - hits, "misses": self.cache.misses - misses,
                                        "slices": len(self.cache), "bytes": self.cache.nbytes},
                "config": self.cfg.to_dict()}
        return PromptResult(volume, mask, record, scores, meta)

    # -- slices and features ------------------------------------------------------------------------------------

    def _normalised(self, volume: Volume, key: Hashable) -> np.ndarray:
        """The volume normalised by the model's intensity preset; the last image's copy is reused."""
        image = self._image  # one read: another thread may replace it meanwhile
        if image is None or image[0] != key:
            preset = resolve_intensity(self.cfg.intensity or self.model_cfg.intensity, volume.modality)
            image = self._image = (key, normalise_volume(volume, preset))
        return image[1]

    def _features(self, volume: Volume, key: Hashable, z: int) -> SliceFeatures:
        def compute() -> SliceFeatures:
            image = self._normalised(volume, key)
            _, sy, sx = volume.spacing
            net = inplane_size(image.shape[1:], (sy, sx), self.model_cfg.pixel_spacing_mm)
            return compute_slice_features(self.model, slice_with_context(image, z, self.model_cfg.context_slices),
                                          net)

        return self.cache.get(self.model_key, (key, z), compute)

    def _masks(self, feats: SliceFeatures, boxes: torch.Tensor, labels: torch.Tensor) -> list[np.ndarray | None]:
        """Full-slice bool masks of the mask head for boxes/labels (None where no pixel passes the threshold)."""
        probs = mask_probabilities(self.model, feats, boxes, labels)
        out: list[np.ndarray | None] = []
        for p, b in zip(probs, boxes):
            pasted = paste_mask(p, b, feats.image_size, self.cfg.mask_threshold)
            if pasted is None:
                out.append(None)
                continue
            (x0, y0, x1, y1), crop = pasted
            full = np.zeros(feats.image_size, dtype=bool)
            full[y0:y1, x0:x1] = crop
            out.append(full)
        return out

    def _allowed(self, prompt: Prompt, class_id: int) -> list[int]:
        """Classes a candidate may have: the one already chosen, else the requested ones, else all."""
        if class_id:
            return [class_id]
        return list(prompt.class_ids) or list(range(1, self.labels.num_classes))

    def _on_slice(self, feats: SliceFeatures, proposals: torch.Tensor, classes: list[int],
                  near: torch.Tensor | None = None, avoid: np.ndarray | None = None
                  ) -> tuple[int, _SliceObject | None]:
        """Class (best of `classes`) and object the heads find from the best of `proposals` [N, 4].

        With `near` [4] (the object's box on the adjacent slice), only refined boxes overlapping it (IoU >= 0.3)
        compete, so the object followed cannot jump to a neighbour of the same class. Candidates lying mostly (half
        or more) in `avoid` (the background objects on this slice) are passed over for the next best.
        """
        probs, refined = classify_boxes(self.model, feats, proposals)
        allowed = torch.tensor(classes)
        scores = probs[:, allowed]  # [N, A]
        if near is not None:
            iou = box_iou(refined[:, allowed].reshape(-1, 4), near[None]).reshape(scores.shape)
            scores = torch.where(iou >= 0.3, scores, torch.zeros_like(scores))
        order = torch.argsort(scores.flatten(), descending=True, stable=True)[: self.cfg.max_candidates]
        c = int(allowed[int(order[0]) % len(classes)])
        for best in order.tolist():
            i, c = best // len(classes), int(allowed[best % len(classes)])
            score = float(scores.flatten()[best])
            box = refined[i, c]
            if score < self.cfg.keep_score:
                break
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            mask = self._masks(feats, box[None], torch.tensor([c]))[0]
            if mask is None or (avoid is not None and np.count_nonzero(mask & avoid) >= 0.5 * mask.sum()):
                continue
            return c, _SliceObject(score, _mask_box(mask), mask)
        return c, None

    # -- the prompts --------------------------------------------------------------------------------------------

    def _box_prompt(self, volume: Volume, key: Hashable, prompt: Prompt, objects: dict[int, _SliceObject],
                    avoid: dict[int, np.ndarray]) -> int:
        """Fill `objects` with the object inside prompt.box, avoiding the background objects `avoid`; return its
        class id (0 when nothing was found)."""
        z0, y0, x0, z1, y1, x1 = prompt.box  # type: ignore[misc]
        proposal = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)
        classes = self._allowed(prompt, 0)
        # One class for the whole object: the most probable one for the box, summed over its slices.
        total = torch.zeros(self.labels.num_classes)
        for z in range(z0, z1):
            total += classify_boxes(self.model, self._features(volume, key, z), proposal)[0][0]
        allowed = torch.tensor(classes)
        c = int(allowed[total[allowed].argmax()])
        # Seeded on its most confident slice - the box, or an RPN proposal inside it where the object is much
        # smaller than the box - then followed through the box's slices with the box still a proposal on each.
        seed_z, obj = z0, None
        for z in range(z0, z1):
            feats = self._features(volume, key, z)
            rpn = rpn_proposals(self.model, feats)
            inside = _area(_intersect(rpn, proposal[0])) >= 0.9 * _area(rpn)
            _, cand = self._on_slice(feats, torch.cat([proposal, rpn[inside]]), [c], avoid=avoid.get(z))
            if cand is not None and (obj is None or cand.score > obj.score):
                seed_z, obj = z, cand
        if obj is None:
            return 0
        objects[seed_z] = obj
        z_range = None if z1 - z0 == 1 else (z0, z1)  # a box on one slice: followed as far as the object goes
        self._propagate(volume, key, seed_z, obj, c, objects, avoid, proposal, z_range)
        return c

    def _object_at_click(self, volume: Volume, key: Hashable, click: Voxel, prompt: Prompt, class_id: int,
                         avoid: dict[int, np.ndarray]) -> tuple[int, _SliceObject] | None:
        """(class, object) of the best candidate on the click's slice whose mask covers it and lies mostly outside
        the background objects `avoid`."""
        z, y, x = (int(v) for v in click)
        feats = self._features(volume, key, z)
        props = rpn_proposals(self.model, feats)
        inside = (props[:, 0] <= x) & (props[:, 2] > x) & (props[:, 1] <= y) & (props[:, 3] > y)
        props = props[inside]
        if not len(props):
            return None
        probs, refined = classify_boxes(self.model, feats, props)
        classes = torch.tensor(self._allowed(prompt, class_id))
        scores = probs[:, classes]  # [P, A]
        boxes = refined[:, classes]  # [P, A, 4]
        labels = classes.expand_as(scores)
        scores, boxes, labels = scores.reshape(-1), boxes.reshape(-1, 4), labels.reshape(-1)
        ok = (scores >= self.cfg.candidate_score) & (boxes[:, 0] <= x) & (boxes[:, 2] > x) \
            & (boxes[:, 1] <= y) & (boxes[:, 3] > y)
        scores, boxes, labels = scores[ok], boxes[ok], labels[ok]
        if not len(scores):
            return None
        keep = batched_nms(boxes, scores, labels, 0.7)[: self.cfg.max_candidates]
        bg = avoid.get(z)
        for chunk in (keep[:1], keep[1:]):  # the best candidate usually fits: its mask alone first
            if not len(chunk):
                continue
            for i, m in zip(chunk.tolist(), self._masks(feats, boxes[chunk], labels[chunk])):
                if m is None or not m[y, x] or (bg is not None and np.count_nonzero(m & bg) >= 0.5 * m.sum()):
                    continue
                return int(labels[i]), _SliceObject(float(scores[i]), _mask_box(m), m)
        return None

    def _background_objects(self, volume: Volume, key: Hashable, prompt: Prompt) -> dict[int, np.ndarray]:
        """{slice: (y, x) bool} of the objects under the background clicks (any class, followed through their
        slices); a click on no object stands for itself."""
        out: dict[int, np.ndarray] = {}
        for click in prompt.background:
            z = int(click[0])
            seed = self._object_at_click(volume, key, click, Prompt(foreground=(click,)), 0, {})
            if seed is None:
                found = {z: np.zeros(volume.shape[1:], dtype=bool)}
                found[z][int(click[1]), int(click[2])] = True
            else:
                objs = {z: seed[1]}
                self._propagate(volume, key, z, seed[1], seed[0], objs, {})
                found = {zz: o.mask for zz, o in objs.items()}
            for zz, m in found.items():
                out[zz] = out[zz] | m if zz in out else m
        return out

    def _propagate(self, volume: Volume, key: Hashable, z: int, seed: _SliceObject, class_id: int,
                   objects: dict[int, _SliceObject], avoid: dict[int, np.ndarray], box: torch.Tensor | None = None,
                   z_range: tuple[int, int] | None = None) -> None:
        """Follow the object from slice z up and down (previous box as the next proposal) until it ends, passing
        over candidates inside the background objects `avoid`.

        `box` [1, 4] is a further proposal on every slice; `z_range` (start, stop) bounds the slices visited.
        """
        lo, hi = z_range if z_range is not None else (0, volume.shape[0])
        for step in (-1, 1):
            prev = seed
            zz = z + step
            while lo <= zz < hi and zz not in objects:
                feats = self._features(volume, key, zz)
                pad = (prev.box[2:] - prev.box[:2]) * self.cfg.grow
                # The previous box (as is and grown), the RPN's proposals around it, and the prompt's box if any.
                rpn = rpn_proposals(self.model, feats)
                rpn = rpn[box_iou(rpn, prev.box[None])[:, 0] >= 0.3]
                proposals = torch.cat([prev.box[None], torch.cat([prev.box[:2] - pad, prev.box[2:] + pad])[None], rpn,
                                       *([box] if box is not None else [])])
                _, obj = self._on_slice(feats, proposals, [class_id], near=prev.box, avoid=avoid.get(zz))
                if obj is None:
                    break
                shared = np.count_nonzero(obj.mask & prev.mask)
                if shared < self.cfg.min_overlap * max(np.count_nonzero(prev.mask), 1):
                    break
                objects[zz] = obj
                prev = obj
                zz += step


def _area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of [N, 4] xyxy boxes (0 for empty ones)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _intersect(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """[N, 4] intersections of boxes with one box [4] (possibly empty)."""
    return torch.cat([torch.maximum(boxes[:, :2], box[:2]), torch.minimum(boxes[:, 2:], box[2:])], dim=1)


def _mask_box(mask: np.ndarray) -> torch.Tensor:
    """FloatTensor[4]: the tight xyxy box (exclusive x1/y1) of a non-empty (y, x) mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def _without(mask: np.ndarray, avoid: dict[int, np.ndarray]) -> np.ndarray:
    """The (z, y, x) mask without the background objects (grown by a pixel) and without the crumbs (3D parts under
    5 % of what remains) such a cut leaves at their rim."""
    for z, m in avoid.items():
        if (mask[z] & m).any():
            mask[z] &= ~ndimage.binary_dilation(m)
    parts, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(parts.ravel())[1:]
        mask &= np.isin(parts, 1 + np.flatnonzero(sizes >= 0.05 * sizes.max()))
    return mask


def _cut_background(mask: np.ndarray, clicks: Sequence[Voxel]) -> np.ndarray:
    """The (z, y, x) mask without its 3D connected parts holding a background click."""
    hit = [c for c in clicks if mask[int(c[0]), int(c[1]), int(c[2])]]
    if not hit:
        return mask
    parts, _ = ndimage.label(mask)
    ids = {int(parts[int(c[0]), int(c[1]), int(c[2])]) for c in hit}
    return mask & ~np.isin(parts, list(ids))
