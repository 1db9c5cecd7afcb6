"""The network learns: a tiny model trained for a bounded number of steps finds the objects it was shown."""

import numpy as np
import torch

from medmrcnn.modeling import build_model
from medmrcnn.synthetic import make_microscopy_image
from medmrcnn.training import instances_to_target
from medmrcnn.transforms import percentile_normalise
from tests.conftest import tiny_config


def _best_iou(pred_masks: np.ndarray, gt: np.ndarray) -> float:
    if len(pred_masks) == 0:
        return 0.0
    inter = (pred_masks & gt[None]).sum(axis=(1, 2))
    union = (pred_masks | gt[None]).sum(axis=(1, 2))
    return float((inter / np.maximum(union, 1)).max())


def test_tiny_model_learns_to_segment_nuclei():
    torch.manual_seed(0)
    ph = make_microscopy_image(shape=(96, 96), n_nuclei=6, radius_px=(7, 12), touching=0.2, seed=3)
    image = torch.from_numpy(percentile_normalise(ph.volume.array[0]))[None]
    target = instances_to_target(ph.gt_instances[0], ph.gt_classes)
    n_gt = len(target["labels"])
    assert n_gt >= 4

    model = build_model(tiny_config())
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(150):
        flip = step % 2 == 1  # flips keep the objects; a cheap augmentation
        img = image.flip(-1) if flip else image
        tgt = instances_to_target(ph.gt_instances[0][:, ::-1] if flip else ph.gt_instances[0], ph.gt_classes)
        loss = sum(model([img], [tgt]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.eval()
    with torch.inference_mode():
        out = model([image])[0]
    keep = out["scores"] > 0.5
    masks = (out["masks"][keep, 0] > 0.5).numpy()
    ious = [_best_iou(masks, (ph.gt_instances[0] == i)) for i in ph.gt_classes]
    assert len(ious) == n_gt
    assert min(ious) >= 0.8, ious
    assert keep.sum().item() == n_gt
