"""From network outputs to compact instances: mask pasting geometry, grid mapping, duplicates, flip TTA merging."""

import numpy as np
import pytest
import torch

from medmrcnn.inference.detector import RawDetections, merge_views
from medmrcnn.inference.postprocess import paste_mask, remove_duplicates, to_slice_instances
from medmrcnn.structures import SliceInstances

M = 28


def dets(boxes, scores, labels, masks=None) -> RawDetections:
    n = len(boxes)
    probs = torch.ones(n, M, M) if masks is None else torch.as_tensor(masks, dtype=torch.float32)
    return RawDetections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                         torch.tensor(labels), probs)


def test_full_mask_pastes_exactly_onto_the_pixels_whose_centres_lie_in_the_box():
    box, crop = paste_mask(torch.ones(M, M), torch.tensor([10.0, 20.0, 30.0, 25.0]), (64, 64), 0.5)
    assert box == (10, 20, 30, 25)
    assert crop.shape == (5, 20) and crop.all()
    # Clipped at the image border, and a box between pixel centres gives nothing.
    box, crop = paste_mask(torch.ones(M, M), torch.tensor([-5.0, 60.0, 8.0, 70.0]), (64, 64), 0.5)
    assert box == (0, 60, 8, 64) and crop.all()
    assert paste_mask(torch.ones(M, M), torch.tensor([3.6, 3.6, 3.9, 3.9]), (64, 64), 0.5) is None


def test_left_half_mask_keeps_its_side_and_threshold_moves_the_edge():
    half = torch.zeros(M, M)
    half[:, : M // 2] = 1.0
    half[:, M // 2] = 0.3  # a soft edge column
    # One pixel per mask cell: pixel centres sit on cell centres, so values are the cells' own.
    box, crop = paste_mask(half, torch.tensor([0.0, 0.0, 28.0, 28.0]), (40, 40), 0.5)
    assert box == (0, 0, 14, 28) and crop.all()
    box_low, _ = paste_mask(half, torch.tensor([0.0, 0.0, 28.0, 28.0]), (40, 40), 0.2)
    assert box_low == (0, 0, 15, 28)
    # Two pixels per cell: the 14 full cells cover 28 pixels from the box origin; the soft column stays below 0.5.
    box, crop = paste_mask(half, torch.tensor([10.0, 4.0, 66.0, 60.0]), (80, 80), 0.5)
    assert box == (10, 4, 38, 60) and crop.all()


def test_network_grid_maps_back_to_the_original_grid():
    # The network saw the slice at half size: its box [5, 10, 15, 12.5] is [10, 20, 30, 25] on the original.
    inst = to_slice_instances(dets([[5.0, 10.0, 15.0, 12.5]], [0.9], [2]), (64, 64), scale_xy=(2.0, 2.0))
    assert inst.boxes.tolist() == [[10, 20, 30, 25]]
    assert inst.labels.tolist() == [2] and inst.scores.tolist() == pytest.approx([0.9])
    assert inst.full_mask(0).sum() == 100


def test_thresholds_sorting_and_empty_masks():
    empty = torch.zeros(1, M, M)
    d = dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [5, 40, 15, 50]], [0.6, 0.95, 0.3, 0.8],
             [1, 1, 1, 1], torch.cat([torch.ones(3, M, M), empty]))
    inst = to_slice_instances(d, (64, 64), score_threshold=0.5)
    assert inst.scores.tolist() == pytest.approx([0.95, 0.6])  # 0.3 below threshold, 0.8 has an empty mask
    assert inst.boxes.tolist() == [[20, 20, 30, 30], [0, 0, 10, 10]]


def _instances(*rects):
    """SliceInstances from (x0, y0, x1, y1, class, score), highest score first."""
    boxes = np.array([r[:4] for r in rects])
    masks = [np.ones((r[3] - r[1], r[2] - r[0]), bool) for r in rects]
    return SliceInstances((50, 50), boxes, [r[5] for r in rects], [r[4] for r in rects], masks)


def test_part_object_duplicates_are_removed_but_touching_and_other_classes_kept():
    whole = (10, 10, 30, 30, 1, 0.9)
    half = (10, 10, 20, 30, 1, 0.8)        # inside `whole`: a duplicate
    neighbour = (30, 10, 40, 30, 1, 0.7)   # touches `whole`, shares no pixel
    other_class = (12, 12, 28, 28, 2, 0.6)  # inside `whole` but another class
    kept = remove_duplicates(_instances(whole, half, neighbour, other_class), overlap=0.5)
    assert kept.boxes.tolist() == [[10, 10, 30, 30], [30, 10, 40, 30], [12, 12, 28, 28]]
    # A bigger, lower-scoring detection around a smaller one lies only partly inside it: kept.
    bigger = (5, 5, 35, 35, 1, 0.5)
    assert len(remove_duplicates(_instances(whole, bigger), overlap=0.5)) == 2


def test_flip_round_trip_and_box_mirroring():
    d = dets([[10.0, 20.0, 30.0, 25.0]], [0.9], [1], torch.rand(1, M, M))
    fx = d.flipped("x", (40, 100))
    assert fx.boxes.tolist() == [[70.0, 20.0, 90.0, 25.0]]
    torch.testing.assert_close(fx.mask_probs, d.mask_probs.flip(-1))
    fy = d.flipped("y", (40, 100))
    assert fy.boxes.tolist() == [[10.0, 15.0, 30.0, 20.0]]
    back = fx.flipped("x", (40, 100))
    torch.testing.assert_close(back.boxes, d.boxes)
    torch.testing.assert_close(back.mask_probs, d.mask_probs)


def test_merge_views_joins_the_same_object_and_discounts_single_view_finds():
    a = dets([[10.0, 10.0, 30.0, 30.0], [60.0, 60.0, 70.0, 70.0]], [0.9, 0.8], [1, 1])
    b = dets([[11.0, 10.0, 31.0, 30.0]], [0.7], [1])
    merged = merge_views([a, b], iou=0.5)
    assert len(merged) == 2
    assert merged.scores.tolist() == pytest.approx([(0.9 + 0.7) / 2, 0.8 / 2])
    expected_box = (0.9 * torch.tensor([10.0, 10, 30, 30]) + 0.7 * torch.tensor([11.0, 10, 31, 30])) / 1.6
    torch.testing.assert_close(merged.boxes[0], expected_box)
    # Full masks resampled onto the merged box stay full inside it.
    assert merged.mask_probs[0, 2:-2, 2:-2].min() > 0.99
    # Different classes never merge.
    c = dets([[10.0, 10.0, 30.0, 30.0]], [0.9], [2])
    assert len(merge_views([a, c], iou=0.5)) == 3
    assert len(merge_views([dets([], [], []), dets([], [], [])], iou=0.5)) == 0
