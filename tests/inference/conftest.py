"""A tiny Mask R-CNN trained once per test session on a CT phantom (CPU, bounded steps) for the quality tests.

The network memorises one phantom on purpose: these tests check that good slice predictions survive batching,
resampling, thresholds, 3D linking and export as correct 3D instances in the input geometry - not how well a
model trained for a minute generalises (the training area's evaluation covers that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medmrcnn.labels import LabelMap
from medmrcnn.modeling import ModelConfig, build_model, save_checkpoint
from medmrcnn.synthetic import Phantom, make_ct_phantom
from medmrcnn.training import instances_to_target
from medmrcnn.transforms import normalise_volume
from medmrcnn.volume import Volume
from tests.conftest import tiny_config

# 96 x 96 pixels of 2.75 mm (a small 264 mm field of view keeps organs and tumours 11-20 pixels across at the
# cost of a 96-pixel slice) and 7.5 mm slices, all exact in float32 so NIfTI round trips are bit-exact.
SHAPE = (16, 96, 96)
SPACING = (7.5, 2.75, 2.75)
WINDOW = "ct:liver"  # level 80 / width 150 HU: hypodense liver tumours stand out from the liver
SEED = 1  # two kidneys, two liver tumours 14 mm apart
STEPS = 160


LABELS = LabelMap.from_names(["kidney", "tumour"])


def ct_phantom(seed: int = SEED, upsample: int = 1) -> Phantom:
    """The test phantom: two kidneys and two liver tumours (the liver is background here), low noise.

    `upsample` = 2 gives the same anatomy (in mm) on a twice finer in-plane grid.
    """
    shape = (SHAPE[0], SHAPE[1] * upsample, SHAPE[2] * upsample)
    spacing = (SPACING[0], SPACING[1] / upsample, SPACING[2] / upsample)
    ph = make_ct_phantom(shape=shape, spacing=spacing, n_tumours=2, tumour_diameter_mm=(30, 45), noise_hu=4.0,
                         seed=seed)
    keep = {i: LABELS.id_of(ph.labels.name_of(c)) for i, c in ph.gt_classes.items()
            if ph.labels.name_of(c) in LABELS.names}
    lut = np.zeros(int(ph.gt_instances.max()) + 1, dtype=ph.gt_instances.dtype)
    lut[list(keep)] = list(keep)
    return Phantom(ph.volume, lut[ph.gt_instances], keep, LABELS)


@dataclass
class Trained:
    model: nn.Module
    config: ModelConfig
    checkpoint: Path
    phantom: Phantom


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: on this shared 2-core machine two threads ran these small convolutions about 3x
    slower whenever other jobs kept the cores busy (measured: 120 training steps, 93 s vs 258 s of CPU time)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="package", autouse=True)
def _one_thread_for_this_package() -> Iterator[None]:
    with one_thread():
        yield


def train_on(phantom: Phantom, steps: int, seed: int = 0) -> tuple[nn.Module, ModelConfig]:
    """Train tiny_config on the slices of `phantom` for `steps` AdamW steps (2 slices each, random x-flips)."""
    with one_thread():
        return _train(phantom, steps, seed)


def _train(phantom: Phantom, steps: int, seed: int) -> tuple[nn.Module, ModelConfig]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = tiny_config(labels=phantom.labels.names, intensity=WINDOW, pixel_spacing_mm=SPACING[1])
    image = normalise_volume(phantom.volume, WINDOW)
    zs = [z for z in range(SHAPE[0]) if phantom.gt_instances[z].any()]
    model = build_model(cfg)
    # Fewer sampled anchors / RoIs than torchvision's defaults: plenty for a handful of objects, half the cost.
    model.rpn.fg_bg_sampler.batch_size_per_image = 64
    model.rpn._pre_nms_top_n["training"], model.rpn._post_nms_top_n["training"] = 400, 200
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 64
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    for _ in range(steps):
        images, targets = [], []
        for z in rng.choice(zs, size=2, replace=False):
            img, inst = image[z], phantom.gt_instances[z]
            if rng.random() < 0.5:
                img, inst = img[:, ::-1], inst[:, ::-1]
            images.append(torch.from_numpy(np.ascontiguousarray(img))[None])
            targets.append(instances_to_target(np.ascontiguousarray(inst), phantom.gt_classes, min_pixels=4))
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), cfg


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    phantom = ct_phantom()
    model, cfg = train_on(phantom, STEPS)
    path = save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", model, cfg)
    return Trained(model, cfg, path, phantom)


def dice_per_instance(gt_instances: np.ndarray, gt_classes: dict[int, int], pred_instances: np.ndarray,
                      pred_classes: dict[int, int]) -> dict[int, float]:
    """Dice of each true instance with the predicted instance of its class that overlaps it most (0 if none)."""
    out = {}
    for g, cls in gt_classes.items():
        gm = gt_instances == g
        ids, counts = np.unique(pred_instances[gm], return_counts=True)
        cands = [(c, int(i)) for i, c in zip(ids, counts) if i and pred_classes.get(int(i)) == cls]
        if not cands:
            out[g] = 0.0
            continue
        pm = pred_instances == max(cands)[1]
        out[g] = float(2 * np.count_nonzero(gm & pm) / (np.count_nonzero(gm) + np.count_nonzero(pm)))
    return out


def sub_phantom(phantom: Phantom, z0: int, z1: int) -> Phantom:
    """Slices z0..z1-1 of a phantom with the geometry of those slices and only the instances on them."""
    affine = phantom.volume.affine.copy()
    affine[:3, 3] += z0 * affine[:3, 2]
    vol = Volume(phantom.volume.array[z0:z1], affine, modality=phantom.volume.modality)
    gt = phantom.gt_instances[z0:z1]
    present = set(np.unique(gt).tolist()) - {0}
    return Phantom(vol, gt, {i: c for i, c in phantom.gt_classes.items() if i in present}, phantom.labels)
