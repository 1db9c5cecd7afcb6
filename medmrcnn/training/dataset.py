"""Slice datasets: positives plus a re-drawn share of empty slices, 2.5D context, class balance, augmentation.

Each epoch is a list of (slice, augmentation seed) pairs drawn from (seed, epoch) alone, so every process of a
distributed run and every resumed run sees exactly the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medmrcnn.modeling.config import ModelConfig
from medmrcnn.training.augment import augment_slice, build_augmentation
from medmrcnn.training.config import AugmentConfig, DataConfig
from medmrcnn.training.preprocess import PreparedVolume
from medmrcnn.training.targets import instances_to_target
from medmrcnn.transforms import slice_with_context


@dataclass(frozen=True)
class SliceRef:
    """Slice `z` of prepared volume `volume`, with the classes present on it (after min_pixels)."""

    volume: int
    z: int
    classes: frozenset[int]


def index_slices(volumes: list[PreparedVolume], min_pixels: int) -> list[SliceRef]:
    """Every slice of every volume with the set of classes whose instances reach `min_pixels` on it."""
    refs = []
    for v, pv in enumerate(volumes):
        for z in range(pv.instances.shape[0]):
            ids, counts = np.unique(pv.instances[z], return_counts=True)
            present = frozenset(
                pv.classes[int(i)] for i, c in zip(ids, counts) if i and c >= min_pixels and int(i) in pv.classes
            )
            refs.append(SliceRef(v, z, present))
    return refs


class SliceDataset(Dataset):
    """Training slices of prepared volumes. `dataset[(i, seed)]` -> (image FloatTensor[C, H, W], target dict).

    Targets follow training.targets (boxes xyxy px recomputed from the augmented masks). `seed` None = no augmentation.
    """

    def __init__(
        self, volumes: list[PreparedVolume], model_cfg: ModelConfig, data_cfg: DataConfig,
        augment_cfg: AugmentConfig | None = None,
    ) -> None:
        self.volumes = volumes
        self.k = model_cfg.context_slices
        self.min_pixels = data_cfg.min_pixels
        self.empty_fraction = data_cfg.empty_fraction
        self.class_balance = data_cfg.class_balance
        self.refs = index_slices(volumes, data_cfg.min_pixels)
        self.augment = build_augmentation(augment_cfg) if augment_cfg is not None else None
        self.crop_size = augment_cfg.crop_size if augment_cfg is not None and augment_cfg.enabled else None

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        i, seed = key
        ref = self.refs[i]
        pv = self.volumes[ref.volume]
        image = slice_with_context(pv.image, ref.z, self.k).astype(np.float32)
        instances = pv.instances[ref.z]
        if seed is not None:
            if self.crop_size:
                image, instances = random_crop(image, instances, self.crop_size, np.random.default_rng([seed, 5]))
            image, instances = augment_slice(self.augment, image, instances, seed)
        target = instances_to_target(instances, pv.classes, min_pixels=self.min_pixels)
        return torch.from_numpy(np.ascontiguousarray(image)), target

    def epoch_samples(self, epoch: int, seed: int, num_samples: int | None = None) -> list[tuple[int, int]]:
        """The (slice index, augmentation seed) pairs of one epoch, shuffled; identical for every process.

        All slices with objects are kept plus round(empty_fraction * empties) empty slices chosen afresh each epoch.
        With `num_samples`, that many are drawn with replacement (weighted by class when class_balance is on).
        """
        rng = np.random.default_rng([seed, epoch, 2024])
        pos = np.array([i for i, r in enumerate(self.refs) if r.classes], dtype=np.int64)
        empty = np.array([i for i, r in enumerate(self.refs) if not r.classes], dtype=np.int64)
        n_empty = int(round(self.empty_fraction * len(empty)))
        pool = np.concatenate([pos, rng.choice(empty, size=n_empty, replace=False)]) if n_empty else pos
        if len(pool) == 0:
            pool = empty
        if num_samples is None and not self.class_balance:
            chosen = rng.permutation(pool)
        else:
            weights = self.class_weights(pool)
            chosen = rng.choice(pool, size=num_samples or len(pool), replace=True, p=weights)
        seeds = rng.integers(0, 2**31 - 1, size=len(chosen))
        return [(int(i), int(s)) for i, s in zip(chosen, seeds)]

    def class_weights(self, pool: np.ndarray) -> np.ndarray:
        """Sampling probabilities over `pool`: uniform, or (class_balance) each class equally likely to be seen."""
        if not self.class_balance:
            return np.full(len(pool), 1.0 / len(pool))
        freq: dict[int, int] = {}
        for i in pool:
            for c in self.refs[i].classes:
                freq[c] = freq.get(c, 0) + 1
        # A slice weighs as much as its rarest class; empty slices weigh the mean, keeping their share of the pool.
        w = np.array([max((1.0 / freq[c] for c in self.refs[i].classes), default=0.0) for i in pool])
        positive = w > 0
        w[~positive] = w[positive].mean() if positive.any() else 1.0
        return w / w.sum()

    def class_counts(self) -> dict[int, int]:
        """Number of slices on which each class appears (for reports)."""
        out: dict[int, int] = {}
        for r in self.refs:
            for c in r.classes:
                out[c] = out.get(c, 0) + 1
        return out


def random_crop(
    image: np.ndarray, instances: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop of image (C, H, W) and instances (H, W), centred near a random object (uniform when empty).

    Axes shorter than `size` are kept whole.
    """
    h, w = instances.shape
    boxes = [b for b in ndimage.find_objects(instances) if b is not None]
    if boxes:
        b = boxes[int(rng.integers(len(boxes)))]
        cy = (b[0].start + b[0].stop) / 2 + rng.uniform(-size / 3, size / 3)
        cx = (b[1].start + b[1].stop) / 2 + rng.uniform(-size / 3, size / 3)
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    y0 = int(np.clip(round(cy - size / 2), 0, max(h - size, 0)))
    x0 = int(np.clip(round(cx - size / 2), 0, max(w - size, 0)))
    return image[:, y0:y0 + size, x0:x0 + size], instances[y0:y0 + size, x0:x0 + size]


class EpochView(Dataset):
    """A fixed list of (slice, seed) samples over a SliceDataset, what the (distributed) sampler shards."""

    def __init__(self, dataset: SliceDataset, samples: list[tuple[int, int | None]]) -> None:
        self.dataset = dataset
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.dataset[self.samples[i]]


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Lists of images and targets (torchvision detection models batch them themselves)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
