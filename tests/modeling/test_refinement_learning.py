"""Learning bar for mask refinement: the same tiny model trained the same way, with and without the point head, on
MR-like phantoms of thin walls in large boxes. The point head must segment the ring and the ribbon better (Dice and
boundary F1 at 1 mm on held-out phantoms) and keep the compact organ as good.

Opt-in (MEDMRCNN_LONG_LEARNING=1): about 10 CPU minutes, and the gain is not yet reproducible at this size (the ring
collapsed in a two-thread run; docs/mask-refinement.md), so it is not part of the CI suite until that is fixed."""

import os

import numpy as np
import pytest
import torch

from medmrcnn.inference.detector import run_detector
from medmrcnn.inference.postprocess import to_slice_instances
from medmrcnn.modeling import build_model
from medmrcnn.synthetic import WALL_LABELS, make_wall_phantom
from medmrcnn.training import instances_to_target
from medmrcnn.training.metrics import boundary_f1, dice
from medmrcnn.transforms import percentile_normalise
from tests.conftest import tiny_config

pytestmark = pytest.mark.skipif(os.environ.get("MEDMRCNN_LONG_LEARNING") != "1",
                                reason="opt-in long learning bar (MEDMRCNN_LONG_LEARNING=1); see docs/mask-refinement.md")

STEPS = 300
SPACING = 0.75  # mm: walls of 1.5-5 mm are 2-7 pixels inside boxes of 60-90 pixels


def _slices(seeds, n_slices):
    out = []
    for seed in seeds:
        ph = make_wall_phantom(shape=(n_slices, 160, 160), spacing=(4.0, SPACING, SPACING), seed=seed)
        for z in range(n_slices):
            image = torch.from_numpy(percentile_normalise(ph.volume.array[z]))[None]
            out.append((image, ph.gt_instances[z], ph.gt_classes))
    return out


@pytest.fixture(scope="module")
def data():
    return _slices(range(4), 3), _slices([100, 101], 2)


def _train_and_score(data, refinement: str) -> dict[str, tuple[float, float]]:
    """Mean (Dice, boundary F1 at 1 mm) per class on the held-out slices, highest-scoring detection per object."""
    train, test = data
    torch.manual_seed(0)
    model = build_model(tiny_config(labels=WALL_LABELS.names, mask_refinement=refinement, point_head_channels=64))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(STEPS):
        image, gt, classes = train[step % len(train)]
        if (step // len(train)) % 2:  # every other pass mirrored: a cheap augmentation that keeps the objects
            image, gt = image.flip(-1), np.ascontiguousarray(gt[:, ::-1])
        loss = sum(model([image], [instances_to_target(gt, classes)]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in WALL_LABELS.names}
    with torch.inference_mode():
        for image, gt, classes in test:
            found = to_slice_instances(run_detector(model, image[None], 0.5)[0], gt.shape)
            for inst, cls in classes.items():
                truth, pred = gt == inst, np.zeros(gt.shape, dtype=bool)
                mine = [k for k in range(len(found)) if found.labels[k] == cls]
                if mine:
                    x0, y0, x1, y1 = found.boxes[mine[0]]
                    pred[y0:y1, x0:x1] = found.masks[mine[0]]
                scores[WALL_LABELS.name_of(cls)].append((dice(truth, pred),
                                                        boundary_f1(truth, pred, (SPACING, SPACING), 1.0)))
    return {name: tuple(np.mean(v, axis=0)) for name, v in scores.items()}


@pytest.fixture(scope="module")
def plain(data):
    return _train_and_score(data, "none")


@pytest.fixture(scope="module")
def refined(data):
    return _train_and_score(data, "pointrend")


def test_point_head_draws_thin_walls_better_and_keeps_compact_organs(plain, refined):
    report = f"plain {plain}, refined {refined}"
    thin = ("ring", "ribbon")
    dice_gain = np.mean([refined[c][0] - plain[c][0] for c in thin])
    bf1_gain = np.mean([refined[c][1] - plain[c][1] for c in thin])
    assert dice_gain >= 0.03, report
    assert bf1_gain >= 0.05, report
    assert all(refined[c][1] > plain[c][1] for c in thin), report
    assert refined["organ"][0] >= max(plain["organ"][0] - 0.02, 0.9), report
