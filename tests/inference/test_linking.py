"""3D linking on crafted per-slice masks: chains, splits, merges, touching objects, optimal matching, fragments."""

import numpy as np
import pytest
from scipy import ndimage

from medmrcnn.inference import link_instances_across_slices, mask_similarity
from medmrcnn.structures import SliceInstances

SHAPE = (40, 60)


def rect(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def disk(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def slice_of(*objects: tuple[np.ndarray, int, float]) -> SliceInstances:
    """Per-slice instances from (full mask, class id, score), stored compactly as the predictor does."""
    label = np.zeros(SHAPE, dtype=np.int32)
    out = []
    for k, (mask, cls, score) in enumerate(objects, start=1):
        label[:] = 0
        label[mask] = k
        out.append(SliceInstances.from_label_image(label, {k: cls}, {k: score}))
    return SliceInstances(
        SHAPE, np.concatenate([s.boxes for s in out]).reshape(-1, 4), [s.scores[0] for s in out],
        [s.labels[0] for s in out], [s.masks[0] for s in out],
    ) if out else SliceInstances(SHAPE)


def members(linked) -> list[list[tuple[int, int]]]:
    return [inst.members for inst in linked]


def test_compact_slice_instances_round_trip_full_masks():
    a, b = disk(10, 10, 5), rect(20, 30, 35, 50)
    s = slice_of((a, 1, 0.9), (b, 2, 0.8))
    np.testing.assert_array_equal(s.full_mask(0), a)
    np.testing.assert_array_equal(s.full_mask(1), b)
    assert s.area().tolist() == [a.sum(), b.sum()]
    # Crops, not frames: the two masks hold their boxes only.
    assert sum(m.size for m in s.masks) == 11 * 11 + 15 * 20
    corner = rect(0, 0, 12, 12)
    assert s.intersection(slice_of((corner, 1, 1.0))).ravel().tolist() == [(a & corner).sum(), 0]


def test_chain_of_moving_disk_is_one_instance():
    slices = [slice_of((disk(20, 15 + 2 * z, 6), 1, 0.9 - 0.01 * z)) for z in range(6)]
    linked = link_instances_across_slices(slices)
    assert members(linked) == [[(z, 0) for z in range(6)]]
    assert linked[0].slice_range == (0, 5)
    assert linked[0].voxel_count == sum(disk(20, 15 + 2 * z, 6).sum() for z in range(6))
    assert linked[0].scores == pytest.approx([0.9 - 0.01 * z for z in range(6)])


def test_gap_slice_breaks_the_chain():
    slices = [slice_of((disk(20, 20, 6), 1, 0.9)), SliceInstances(SHAPE), slice_of((disk(20, 20, 6), 1, 0.9))]
    assert members(link_instances_across_slices(slices)) == [[(0, 0)], [(2, 0)]]


def test_one_missed_slice_inside_a_lesion_is_bridged_within_the_gap_in_mm():
    lesion = [slice_of((disk(20, 20 + z, 6), 1, 0.9)) for z in range(7)]
    lesion[3] = slice_of((disk(5, 50, 3), 1, 0.8))  # the detector missed the lesion here (and found something else)
    one = link_instances_across_slices(lesion, max_gap_mm=5.0, slice_spacing_mm=2.5)
    assert members(one) == [[(0, 0), (1, 0), (2, 0), (4, 0), (5, 0), (6, 0)], [(3, 0)]]
    # 5 mm slices: a missed slice spans 5 mm, within the gap; 6 mm slices: beyond it, two instances.
    assert len(link_instances_across_slices(lesion, max_gap_mm=5.0, slice_spacing_mm=5.0)) == 2
    assert len(link_instances_across_slices(lesion, max_gap_mm=5.0, slice_spacing_mm=6.0)) == 3
    # Two missed slices at 2.5 mm = 5 mm are bridged too; three (7.5 mm) are not.
    two = [lesion[z] if z not in (2, 3) else SliceInstances(SHAPE) for z in range(7)]
    assert len(link_instances_across_slices(two, max_gap_mm=5.0, slice_spacing_mm=2.5)) == 1
    three = [lesion[z] if z not in (2, 3, 4) else SliceInstances(SHAPE) for z in range(7)]
    assert len(link_instances_across_slices(three, max_gap_mm=5.0, slice_spacing_mm=2.5)) == 2
    # Masks that continue on the next slice are never re-linked across a gap.
    continuing = [slice_of((disk(20, 20, 6), 1, 0.9)), slice_of((disk(20, 20, 6), 1, 0.9)),
                  slice_of((disk(20, 20, 6), 1, 0.9))]
    assert members(link_instances_across_slices(continuing, max_gap_mm=5.0, slice_spacing_mm=2.5)) == [
        [(0, 0), (1, 0), (2, 0)]]


def test_split_joins_or_branches_deterministically():
    parent = rect(10, 10, 30, 40)
    left, right = rect(10, 10, 30, 22), rect(10, 26, 30, 40)  # right is the larger branch
    slices = [slice_of((parent, 1, 0.9)), slice_of((parent, 1, 0.9)),
              slice_of((left, 1, 0.8), (right, 1, 0.7)), slice_of((left, 1, 0.8), (right, 1, 0.7))]
    joined = link_instances_across_slices(slices, join_branches=True)
    assert members(joined) == [[(0, 0), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1)]]
    # One-to-one only: the parent continues into the branch it overlaps most (equal "overlap" ratios of 1.0
    # would tie, so use IoU, where the larger right branch wins); the other branch is its own instance.
    split = link_instances_across_slices(slices, metric="iou", threshold=0.2, join_branches=False)
    assert members(split) == [[(0, 0), (1, 0), (2, 1), (3, 1)], [(2, 0), (3, 0)]]


def test_merge_joins_or_keeps_the_best_match():
    left, right, both = rect(10, 10, 30, 22), rect(10, 26, 30, 40), rect(10, 10, 30, 40)
    slices = [slice_of((left, 1, 0.8), (right, 1, 0.7)), slice_of((left, 1, 0.8), (right, 1, 0.7)),
              slice_of((both, 1, 0.9))]
    assert members(link_instances_across_slices(slices)) == [[(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]]
    kept = link_instances_across_slices(slices, metric="iou", threshold=0.2, join_branches=False)
    assert members(kept) == [[(0, 0), (1, 0)], [(0, 1), (1, 1), (2, 0)]]


def test_two_objects_touching_on_one_slice_stay_two():
    # Side by side on every slice; on slice 2 they grow until their masks share a border (no shared pixel).
    slices = []
    for z in range(5):
        grow = 4 if z == 2 else 0
        a, b = rect(10, 10, 30, 26 + grow), rect(10, 30, 30, 46)
        slices.append(slice_of((a, 1, 0.9), (b, 1, 0.8)))
    stack = np.stack([s.full_mask(0) | s.full_mask(1) for s in slices])
    assert ndimage.label(stack)[1] == 1  # connected components would call them one object
    for join in (True, False):
        linked = link_instances_across_slices(slices, join_branches=join)
        assert members(linked) == [[(z, 0) for z in range(5)], [(z, 1) for z in range(5)]]


def test_matching_is_optimal_not_greedy():
    # A overlaps C most, but B overlaps only C: the best total pairs A-D and B-C (0.5 + 0.4 > 0.7).
    a, b = rect(0, 10, 10, 20), rect(0, 20, 10, 30)
    c, d = rect(0, 13, 10, 24), rect(0, 5, 10, 15)
    slices = [slice_of((a, 1, 0.9), (b, 1, 0.8)), slice_of((c, 1, 0.9), (d, 1, 0.8))]
    sim = mask_similarity(slices[0], slices[1], "overlap")
    np.testing.assert_allclose(sim, [[0.7, 0.5], [0.4, 0.0]])
    linked = link_instances_across_slices(slices, threshold=0.3, join_branches=False)
    assert members(linked) == [[(0, 0), (1, 1)], [(0, 1), (1, 0)]]


def test_classes_never_link():
    m = disk(20, 20, 8)
    slices = [slice_of((m, 1, 0.9)), slice_of((m, 2, 0.9)), slice_of((m, 2, 0.9))]
    linked = link_instances_across_slices(slices)
    assert [(inst.class_id, inst.members) for inst in linked] == [(1, [(0, 0)]), (2, [(1, 0), (2, 0)])]


def test_metric_iou_versus_overlap_at_a_pole():
    slices = [slice_of((disk(20, 20, 10), 1, 0.9)), slice_of((disk(20, 20, 4), 1, 0.9))]
    assert mask_similarity(slices[0], slices[1], "iou")[0, 0] < 0.2
    assert mask_similarity(slices[0], slices[1], "overlap")[0, 0] == 1.0
    assert len(link_instances_across_slices(slices, metric="iou", threshold=0.5)) == 2
    assert len(link_instances_across_slices(slices, metric="overlap", threshold=0.5)) == 1


def test_tied_duplicates_link_to_the_higher_scoring_detection():
    m = disk(20, 20, 6)
    slices = [slice_of((m, 1, 0.9)), slice_of((m, 1, 0.95), (m, 1, 0.6))]
    linked = link_instances_across_slices(slices, join_branches=False)
    assert members(linked) == [[(0, 0), (1, 0)], [(1, 1)]]


def test_fragments_below_voxels_or_mm3_are_removed():
    big, small = disk(20, 20, 6), rect(0, 50, 2, 53)  # 6 voxels
    slices = [slice_of((big, 1, 0.9), (small, 1, 0.9)), slice_of((big, 1, 0.9))]
    assert len(link_instances_across_slices(slices, min_voxels=7)) == 1
    assert len(link_instances_across_slices(slices, min_voxels=6)) == 2
    assert len(link_instances_across_slices(slices, min_volume_mm3=13.0, voxel_volume_mm3=2.0)) == 1
    assert len(link_instances_across_slices(slices, min_volume_mm3=12.0, voxel_volume_mm3=2.0)) == 2


def test_bad_metric_is_refused():
    with pytest.raises(ValueError, match="metric"):
        mask_similarity(SliceInstances(SHAPE), SliceInstances(SHAPE), "dice")
