"""Learning bar for mask refinement: on MR-like phantoms of thin walls in large boxes, the point head must segment
the ring and the ribbon better than the 28 x 28 head (Dice and boundary F1 at 1 mm on held-out phantoms) and keep
the compact organ as good.

Recipe (docs/mask-refinement.md): one tiny plain Mask R-CNN is trained on the phantoms (the shared detector). From
that one state both arms fine-tune their mask branch for the same steps on the same slices in the same order, with
the detector (backbone, FPN, RPN, box head) frozen: the 28 x 28 head alone, or the 28 x 28 head plus a fresh point
head. Both arms therefore find the same boxes with the same scores, so the comparison sees only the refinement,
not the variance of two independently trained detectors (which decided the outcome of the earlier recipe).
"""

import numpy as np
import pytest
import torch

from medmrcnn.inference.detector import RawDetections, run_detector
from medmrcnn.inference.postprocess import paste_mask
from medmrcnn.modeling import build_model
from medmrcnn.synthetic import WALL_LABELS, make_wall_phantom
from medmrcnn.training import instances_to_target
from medmrcnn.training.metrics import boundary_f1, dice
from medmrcnn.transforms import percentile_normalise
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

DETECTOR_STEPS = 300  # the shared plain model
HEAD_STEPS = 100  # each arm's mask branch, detector frozen
SPACING = 0.75  # mm
THICKNESS_MM = (1.5, 3.0)  # walls of 2-4 pixels inside boxes of 60-90 pixels: about one 28 x 28 cell or less
SEED = 0  # torch seed of the detector's initialisation and of RoI and point sampling
MASK_PARAMS = ("roi_heads.mask_head.", "roi_heads.mask_predictor.", "roi_heads.point_head.")

Slice = tuple[torch.Tensor, np.ndarray, dict[int, int]]


def _slices(seeds: range, n_slices: int) -> list[Slice]:
    out = []
    for seed in seeds:
        ph = make_wall_phantom(shape=(n_slices, 160, 160), spacing=(4.0, SPACING, SPACING),
                               thickness_mm=THICKNESS_MM, seed=seed)
        for z in range(n_slices):
            out.append((torch.from_numpy(percentile_normalise(ph.volume.array[z]))[None], ph.gt_instances[z],
                        ph.gt_classes))
    return out


def _config(refinement: str):
    return tiny_config(labels=WALL_LABELS.names, mask_refinement=refinement, point_head_channels=64)


def _train(model: torch.nn.Module, train: list[Slice], steps: int) -> None:
    """AdamW on the trainable parameters, one slice per step in a fixed order; every other pass mirrored."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(steps):
        image, gt, classes = train[step % len(train)]
        if (step // len(train)) % 2:
            image, gt = image.flip(-1), np.ascontiguousarray(gt[:, ::-1])
        loss = sum(model([image], [instances_to_target(gt, classes)]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def data() -> tuple[list[Slice], list[Slice]]:
    return _slices(range(4), 3), _slices(range(100, 104), 3)


def train_detector(data, seed: int = SEED, steps: int = DETECTOR_STEPS) -> dict[str, torch.Tensor]:
    """State of the plain model trained end to end: the starting point of both arms."""
    torch.manual_seed(seed)
    model = build_model(_config("none"))
    model.train()
    _train(model, data[0], steps)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def detector(data) -> dict[str, torch.Tensor]:
    return train_detector(data)


def fine_tune_and_detect(data, detector_state: dict[str, torch.Tensor], refinement: str, steps: int = HEAD_STEPS,
                         seed: int = SEED) -> list[RawDetections]:
    """One arm: the shared detector with `refinement`, its mask branch fine-tuned for `steps` with everything else
    frozen (batch norm in eval mode), then run on the held-out slices."""
    torch.manual_seed(seed + 1)
    model = build_model(_config(refinement))
    missing, unexpected = model.load_state_dict(detector_state, strict=False)
    assert not unexpected and all(k.startswith("roi_heads.point_head.") for k in missing)
    assert bool(missing) == (refinement == "pointrend")  # only the point head starts fresh
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(MASK_PARAMS))
    model.train()
    model.backbone.eval()
    _train(model, data[0], steps)
    model.eval()
    with torch.inference_mode():
        return [run_detector(model, image[None], 0.5)[0] for image, _, _ in data[1]]


def _best(det: RawDetections, cls: int) -> int | None:
    """Index of the highest-scoring detection of class `cls` reaching 0.5, if any."""
    k = torch.nonzero((det.labels == cls) & (det.scores >= 0.5)).flatten()
    return None if len(k) == 0 else int(k[det.scores[k].argmax()])


def score(data, detections: list[RawDetections]) -> dict[str, tuple[float, float]]:
    """Mean (Dice, boundary F1 at 1 mm) per class over the held-out objects that the detector found, each scored
    with the mask of its class's highest-scoring detection (both arms share the detector, hence the objects)."""
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in WALL_LABELS.names}
    for (_, gt, classes), det in zip(data[1], detections):
        for inst, cls in classes.items():
            best = _best(det, cls)
            if best is None:
                continue
            truth, pred = gt == inst, np.zeros(gt.shape, dtype=bool)
            pasted = paste_mask(det.mask_probs[best], det.boxes[best], gt.shape, 0.5)
            if pasted is not None:
                (x0, y0, x1, y1), crop = pasted
                pred[y0:y1, x0:x1] = crop
            scores[WALL_LABELS.name_of(cls)].append((dice(truth, pred),
                                                    boundary_f1(truth, pred, (SPACING, SPACING), 1.0)))
    return {name: tuple(float(x) for x in np.mean(v, axis=0)) for name, v in scores.items()}


def found_fraction(data, detections: list[RawDetections]) -> float:
    """Share of the held-out objects for which the detector has a detection of their class reaching 0.5."""
    hits = [_best(det, cls) is not None
            for (_, _, classes), det in zip(data[1], detections) for cls in classes.values()]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def plain(data, detector) -> list[RawDetections]:
    return fine_tune_and_detect(data, detector, "none")


@pytest.fixture(scope="module")
def refined(data, detector) -> list[RawDetections]:
    return fine_tune_and_detect(data, detector, "pointrend")


def test_both_arms_find_the_same_objects(data, plain, refined):
    for a, b in zip(plain, refined):
        assert torch.equal(a.labels, b.labels)
        torch.testing.assert_close(a.boxes, b.boxes)
        torch.testing.assert_close(a.scores, b.scores)
        assert a.mask_probs.shape[-1] == 28
        assert len(b) == 0 or b.mask_probs.shape[-1] > 28  # refined towards the slice's resolution
    # The shared detector finds (nearly) every held-out object, so the masks are compared on (nearly) all of them.
    assert found_fraction(data, plain) >= 0.9


def test_point_head_draws_thin_walls_better_and_keeps_compact_organs(data, plain, refined):
    base, ours = score(data, plain), score(data, refined)
    report = f"28 x 28 head {base}, point head {ours}"
    thin = ("ring", "ribbon")
    assert np.mean([ours[c][0] - base[c][0] for c in thin]) >= 0.05, report
    assert np.mean([ours[c][1] - base[c][1] for c in thin]) >= 0.03, report
    assert all(ours[c][0] > base[c][0] and ours[c][1] > base[c][1] for c in thin), report
    assert ours["organ"][0] >= base["organ"][0] - 0.02 and ours["organ"][0] >= 0.9, report
