"""Holes and rings are first-class: a ring stays one instance with its hole through linking, measurement (volume,
wall thickness) and a DICOM-SEG round trip."""

import json

import numpy as np
import pytest
from scipy import ndimage

from medmrcnn.dicomseg import read_seg, write_seg
from medmrcnn.inference import PredictorConfig
from medmrcnn.inference.measure import wall_thickness_mm
from medmrcnn.io import load_volume
from medmrcnn.synthetic import make_wall_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.volume import Volume
from tests.dicomseg.seg_tools import assert_seg_matches
from tests.inference.truth import result_from_truth

WALLS = ("ring", "ribbon", "rim")


@pytest.fixture(scope="module")
def phantom():
    return make_wall_phantom(shape=(8, 192, 192), spacing=(4.0, 0.75, 0.75), seed=4)


def _holes(mask2d: np.ndarray) -> int:
    """Number of background components enclosed by the mask (its holes)."""
    background, n = ndimage.label(~np.pad(mask2d, 1))
    return n - 1


def test_ring_and_rim_stay_one_instance_each_with_their_hole(phantom):
    result = result_from_truth(phantom, PredictorConfig(min_voxels=0, wall_classes=WALLS))
    by_name = {r.class_name: r for r in result.instances}
    assert sorted(by_name) == sorted(phantom.labels.names) and len(result.instances) == 4
    for gt_id, name in enumerate(phantom.labels.names, start=1):
        rec = by_name[name]
        mine = result.instance_map == rec.id
        assert np.array_equal(mine, phantom.gt_instances == gt_id), rec.class_name
        assert rec.voxel_count == int((phantom.gt_instances == gt_id).sum())
        assert rec.volume_ml == pytest.approx(rec.voxel_count * phantom.volume.voxel_volume_ml)
    ring = result.instance_map == by_name["ring"].id
    assert all(_holes(s) == 1 for s in ring)  # the blood pool is a hole, not part of the wall
    rim = result.instance_map == by_name["rim"].id
    assert sum(_holes(s) == 1 for s in rim) >= 2  # the necrotic core, on the slices through the lesion's middle


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_wall_thickness_matches_the_phantoms_known_thickness(seed):
    ph = make_wall_phantom(shape=(3, 192, 192), spacing=(4.0, 0.75, 0.75), seed=seed)
    truth = ph.volume.metadata["wall_thickness_mm"]
    result = result_from_truth(ph, PredictorConfig(min_voxels=0, wall_classes=("ring", "ribbon")))
    by_name = {r.class_name: r for r in result.instances}
    for name in ("ring", "ribbon"):
        # Within half a pixel plus 0.15 mm of the true thickness (1.5-5 mm).
        assert by_name[name].wall_thickness_mm == pytest.approx(truth[name], abs=0.75 / 2 + 0.15), name
    assert by_name["organ"].wall_thickness_mm is None and by_name["rim"].wall_thickness_mm is None


def test_wall_thickness_of_straight_bands_at_every_width():
    for width in range(2, 9):
        band = np.zeros((1, 40, 60), dtype=bool)
        band[0, 10:10 + width, 5:55] = True
        assert wall_thickness_mm(band, (0.5, 0.5)) == pytest.approx(width * 0.5, abs=0.25 + 1e-9), width
    assert wall_thickness_mm(np.zeros((2, 5, 5), dtype=bool), (1.0, 1.0)) == 0.0


def test_unknown_wall_class_is_a_clear_error(phantom):
    with pytest.raises(Exception, match="unknown class 'myocardium'"):
        result_from_truth(phantom, PredictorConfig(min_voxels=0, wall_classes=("myocardium",)))


def test_ring_hole_survives_a_dicom_seg_round_trip(phantom, tmp_path):
    scaled = Volume(np.round(phantom.volume.array * 1000), phantom.volume.affine, modality="MR")
    write_dicom_series(scaled, tmp_path / "series", series_description="Synthetic MR wall phantom")
    reference = load_volume(tmp_path / "series")
    config = tmp_path / "labels.json"
    concept = {"category": {"scheme": "SCT", "code": "91723000", "meaning": "Anatomical Structure"},
               "type": {"scheme": "SCT", "code": "74281007", "meaning": "Myocardium"}}
    config.write_text(json.dumps({"classes": {n: concept for n in ("ring", "ribbon", "rim", "organ")}}))
    result = result_from_truth(phantom, PredictorConfig(min_voxels=0, wall_classes=WALLS))
    result.volume = reference
    seg = write_seg(result, reference, tmp_path / "seg.dcm", per_instance=True, label_config=config)
    back = read_seg(seg, reference, label_config=config)
    ring_segment = next(s.number for s in back.segments if s.tracking_id == "ring 1")
    ring = back.instance_map.array == ring_segment
    assert np.array_equal(ring, phantom.gt_instances == 1)
    assert all(_holes(s) == 1 for s in ring)
    to_segment = np.zeros(len(result.instances) + 1, dtype=np.uint16)
    for s in back.segments:
        to_segment[int(s.tracking_id.split()[-1])] = s.number
    assert_seg_matches(seg, reference, to_segment[result.instance_map], tmp_path / "dcmqi")
