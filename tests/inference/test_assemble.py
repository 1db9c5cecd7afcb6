"""Painting linked instances into label maps (overlaps by score) and measuring them in patient units."""

import numpy as np
import pytest
import SimpleITK as sitk

from medmrcnn.inference.assemble import (
    instance_dtype, paint_class_map, paint_instances, remove_small_and_renumber,
)
from medmrcnn.inference.linking import link_instances_across_slices
from medmrcnn.inference.measure import longest_diameter_mm, measure_instances
from medmrcnn.labels import LabelMap
from medmrcnn.structures import SliceInstances
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.volume import Volume, affine_from_geometry
from tests.inference.truth import result_from_truth


def _slice(shape, *objects):
    """SliceInstances from (y0, x0, y1, x1, class, score) rectangles."""
    masks, boxes = [], []
    for y0, x0, y1, x1, _, _ in objects:
        boxes.append((x0, y0, x1, y1))
        masks.append(np.ones((y1 - y0, x1 - x0), dtype=bool))
    return SliceInstances(shape, np.array(boxes).reshape(-1, 4), [o[5] for o in objects], [o[4] for o in objects],
                          masks)


def test_overlaps_go_to_the_higher_score_and_class_map_agrees():
    shape = (12, 12)
    # Instance A (class 1) on slices 0-1; instance B (class 2) on slices 1-2 overlapping A on slice 1.
    slices = [
        _slice(shape, (0, 0, 6, 6, 1, 0.6)),
        _slice(shape, (0, 0, 6, 6, 1, 0.6), (3, 3, 9, 9, 2, 0.9)),
        _slice(shape, (3, 3, 9, 9, 2, 0.9)),
    ]
    linked = link_instances_across_slices(slices)
    assert len(linked) == 2
    inst = paint_instances(slices, linked, (3, *shape))
    assert inst.dtype == np.uint16
    assert inst[1, 4, 4] == 2  # B scored higher: the shared voxels are B's
    assert inst[1, 1, 1] == 1
    boxes, old = remove_small_and_renumber(inst, len(linked))
    cls = paint_class_map(inst, boxes, [linked[i - 1].class_id for i in old], num_labels=2)
    lut = np.array([0, 1, 2])
    np.testing.assert_array_equal(cls, lut[inst])
    assert cls.dtype == np.uint8


def test_small_after_overlap_removed_and_ids_renumbered():
    inst = np.zeros((2, 10, 10), dtype=np.uint16)
    inst[0, :5, :5] = 1      # 25 voxels
    inst[0, 6, 6] = 2        # 1 voxel: a fragment
    inst[1, 2:8, 2:8] = 3    # 36 voxels
    boxes, old = remove_small_and_renumber(inst, 3, min_voxels=2)
    assert old == [1, 3]
    assert sorted(np.unique(inst).tolist()) == [0, 1, 2]
    assert np.count_nonzero(inst == 2) == 36 and inst[0, 6, 6] == 0
    assert boxes[1] == (slice(1, 2), slice(2, 8), slice(2, 8))
    # mm3 limit: 25 voxels of 2 mm3 = 50 mm3 < 60 mm3
    boxes, old = remove_small_and_renumber(inst, 2, min_volume_mm3=60.0, voxel_volume_mm3=2.0)
    assert old == [2] and np.count_nonzero(inst == 1) == 36


def test_instance_dtype_grows_past_uint16():
    assert instance_dtype(65535) == np.uint16
    assert instance_dtype(65536) == np.uint32


def test_longest_diameter_between_pixel_edges_in_mm():
    m = np.zeros((20, 30), dtype=bool)
    m[5:9, 10:20] = True  # 4 rows x 10 columns
    assert longest_diameter_mm(m, (2.0, 0.5)) == pytest.approx(np.hypot(4 * 2.0, 10 * 0.5))
    yy, xx = np.mgrid[:41, :41]
    d = longest_diameter_mm((yy - 20) ** 2 + (xx - 20) ** 2 <= 15 ** 2, (0.8, 0.8))
    assert 30 * 0.8 <= d <= 32 * 0.8
    assert longest_diameter_mm(np.zeros((3, 3), bool), (1.0, 1.0)) == 0.0


def test_measurements_match_simpleitk_geometry_on_an_oblique_volume():
    theta = np.deg2rad(20)
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    vol = Volume(np.zeros((6, 16, 20), np.int16),
                 affine_from_geometry((0.7, 0.9, 2.5), (-30.0, 12.0, 100.0), direction), modality="CT")
    inst = np.zeros(vol.shape, dtype=np.uint16)
    inst[1:4, 2:7, 3:11] = 1
    boxes, _ = remove_small_and_renumber(inst, 1)
    rec = measure_instances(inst, boxes, [2], [[0.5, 0.7, 0.9]], vol, LabelMap.from_names(["a", "b"]))[0]
    assert (rec.id, rec.class_id, rec.class_name) == (1, 2, "b")
    assert rec.score_max == pytest.approx(0.9) and rec.score_mean == pytest.approx(0.7)
    assert rec.voxel_count == 3 * 5 * 8
    assert rec.volume_ml == pytest.approx(120 * 0.7 * 0.9 * 2.5 / 1000)
    assert rec.bbox == (1, 2, 3, 4, 7, 11) and rec.slice_range == (1, 3)
    img = sitk.GetImageFromArray(inst)
    img.SetSpacing((0.7, 0.9, 2.5))
    img.SetOrigin((-30.0, 12.0, 100.0))
    img.SetDirection(direction.ravel().tolist())
    centre_ijk = (3 + 10) / 2, (2 + 6) / 2, (1 + 3) / 2
    expected = img.TransformContinuousIndexToPhysicalPoint(centre_ijk)
    assert rec.centroid_mm == pytest.approx(expected, abs=1e-9)
    assert rec.longest_diameter_mm == pytest.approx(np.hypot(8 * 0.7, 5 * 0.9))


def test_perfect_slices_of_a_phantom_link_back_to_its_ground_truth():
    ph = make_ct_phantom(shape=(12, 80, 80), spacing=(5.0, 4.5, 4.5), n_tumours=3, tumour_diameter_mm=(20, 35),
                         seed=5)
    result = result_from_truth(ph)
    assert result.num_instances == len(ph.gt_classes)
    for rec in result.instances:
        gt_ids, counts = np.unique(ph.gt_instances[result.instance_map == rec.id], return_counts=True)
        assert len(gt_ids) == 1, "a predicted instance must cover exactly one true instance"
        gt = int(gt_ids[0])
        np.testing.assert_array_equal(result.instance_map == rec.id, ph.gt_instances == gt)
        assert rec.class_id == ph.gt_classes[gt]
    np.testing.assert_array_equal(result.class_map, ph.class_map())
