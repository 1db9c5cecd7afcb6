"""DICOM series + DICOM-SEG pairs in a datalist: the annotation comes back on the image grid as instances."""

import json

import numpy as np

from medmrcnn.dicomseg import write_seg
from medmrcnn.io import load_volume
from medmrcnn.labels import LabelMap
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.training import DataConfig
from medmrcnn.training.datalist import load_datalist_items


def _study(tmp_path):
    ph = make_ct_phantom(shape=(12, 64, 64), spacing=(4.0, 5.0, 5.0), n_tumours=3, tumour_diameter_mm=(14, 20), seed=5)
    write_dicom_series(ph.volume, tmp_path / "ct", shuffle_names=True)
    reference = load_volume(tmp_path / "ct")
    return ph, reference


def test_semantic_seg_becomes_per_slice_instances(tmp_path):
    ph, reference = _study(tmp_path)
    write_seg(ph.class_map(), reference, tmp_path / "seg.dcm", labels=ph.labels, algorithm_type="MANUAL")
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "ct", "label": "seg.dcm"}]}))
    labels = LabelMap.from_names(["tumour", "liver"])  # another order than the SEG's: matched by name
    (item,) = load_datalist_items(tmp_path / "list.json", "training", labels, DataConfig())
    assert item.per_slice_instances
    expected = np.zeros(ph.gt_instances.shape, np.uint8)
    expected[ph.class_map() == ph.labels.id_of("tumour")] = 1
    expected[ph.class_map() == ph.labels.id_of("liver")] = 2
    np.testing.assert_array_equal(item.class_map(), expected)  # kidneys are not model labels: ignored
    lesions, classes = item.lesions()
    tumours = sorted(int((lesions == k).sum()) for k, c in classes.items() if c == 1)
    truth = sorted(int((ph.gt_instances == k).sum()) for k, c in ph.gt_classes.items() if c == ph.labels.id_of("tumour"))
    assert tumours == truth  # 3D tumours regrouped from per-slice components


def test_per_instance_seg_keeps_instances(tmp_path):
    ph, reference = _study(tmp_path)
    # A bare class map written per instance is split into 3D connected components by write_seg.
    write_seg(ph.class_map(), reference, tmp_path / "seg.dcm", labels=ph.labels, per_instance=True,
              algorithm_type="MANUAL")
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "ct", "label": "seg.dcm"}]}))
    (item,) = load_datalist_items(tmp_path / "list.json", "training", ph.labels, DataConfig(label_kind="instance"))
    np.testing.assert_array_equal(item.class_map(), ph.class_map())
    n_truth = len(ph.gt_classes)
    assert len(item.gt_classes) == n_truth
