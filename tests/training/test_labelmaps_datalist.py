"""Datalists: NIfTI/NRRD/MHA label maps become per-slice instances; broken items are refused with one line."""

import json

import numpy as np
import pytest

from medmrcnn.errors import DataError
from medmrcnn.io import save_volume
from medmrcnn.labels import LabelMap
from medmrcnn.training import DataConfig
from medmrcnn.training.datalist import load_datalist_items
from medmrcnn.training.labelmaps import semantic_to_instances
from medmrcnn.volume import Volume, affine_from_geometry

LABELS = LabelMap.from_names(["liver", "tumour"])


def _volume(array, spacing=(0.8, 0.8, 2.0)):
    return Volume(array, affine_from_geometry(spacing, (-10.0, 5.0, 30.0)), modality="CT")


def _pair(tmp_path, label, suffix=".nii.gz", name="a", label_spacing=(0.8, 0.8, 2.0)):
    image = _volume(np.random.default_rng(0).integers(-100, 200, size=label.shape).astype(np.int16))
    img_path = save_volume(image, tmp_path / f"{name}_img{suffix}")
    lab_path = save_volume(_volume(label.astype(np.uint8), label_spacing), tmp_path / f"{name}_lab{suffix}")
    return img_path, lab_path


def _datalist(tmp_path, entries, key="training"):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({key: entries}))
    return path


def _load(tmp_path, image, label, cfg=None):
    entry = {"image": str(image), "label": str(label)}
    return load_datalist_items(_datalist(tmp_path, [entry]), "training", LABELS, cfg or DataConfig())


def test_semantic_components_are_split_per_slice_and_class():
    lab = np.zeros((2, 20, 20), np.uint8)
    lab[0, 2:6, 2:6] = 1
    lab[0, 10:14, 10:14] = 1  # a second liver component on the same slice
    lab[0, 3:5, 3:5] = 2      # tumour inside the first
    lab[1, 2:6, 2:6] = 1      # same place next slice: a separate 2D instance
    inst, classes = semantic_to_instances(lab, {1: 1, 2: 2}, "x")
    assert sorted(classes.values()) == [1, 1, 1, 2]
    assert len(np.unique(inst[0])) - 1 == 3 and len(np.unique(inst[1])) - 1 == 1
    assert set(np.unique(inst[0][lab[0] == 2])) == {k for k, v in classes.items() if v == 2}
    # Every instance lies on one slice only and covers exactly one connected region of one class.
    for k in classes:
        assert len(np.unique(np.nonzero(inst == k)[0])) == 1


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_datalist_semantic_label_maps_load_on_the_image_grid(tmp_path, suffix):
    lab = np.zeros((3, 24, 24), np.uint8)
    lab[1, 4:12, 4:12] = 1
    lab[1, 6:8, 6:8] = 2
    lab[2, 15:20, 15:22] = 2
    img, lbl = _pair(tmp_path, lab, suffix)
    (item,) = _load(tmp_path, img.name, lbl.name)
    assert item.volume.shape == (3, 24, 24)
    np.testing.assert_array_equal(item.class_map(), lab)
    assert sorted(item.gt_classes.values()) == [1, 2, 2]


def test_instance_maps_use_the_item_class_table(tmp_path):
    lab = np.zeros((2, 16, 16), np.uint8)
    lab[0, 2:6, 2:6] = 7
    lab[1, 2:6, 2:6] = 7  # one instance across two slices
    lab[1, 9:12, 9:12] = 3
    img, lbl = _pair(tmp_path, lab)
    entry = {"image": img.name, "label": lbl.name, "classes": {"7": "liver", "3": "tumour"}}
    (item,) = load_datalist_items(_datalist(tmp_path, [entry]), "training", LABELS, DataConfig(label_kind="instance"))
    assert item.gt_classes == {7: 1, 3: 2}
    np.testing.assert_array_equal(item.gt_instances, lab)


def test_label_values_remap_classes(tmp_path):
    lab = np.zeros((1, 10, 10), np.uint8)
    lab[0, 2:5, 2:5] = 6
    img, lbl = _pair(tmp_path, lab)
    cfg = DataConfig(label_values={6: "tumour"})
    (item,) = _load(tmp_path, img, lbl, cfg)
    assert list(item.gt_classes.values()) == [2]


def test_broken_items_are_refused_with_one_line(tmp_path):
    lab = np.zeros((2, 12, 12), np.uint8)
    lab[0, 2:4, 2:4] = 5
    img, lbl = _pair(tmp_path, lab, name="values")
    with pytest.raises(DataError, match=r"label values \[5\]"):
        _load(tmp_path, img.name, lbl.name)
    img2, _ = _pair(tmp_path, np.zeros((2, 12, 12), np.uint8), name="shape")
    _, lbl2 = _pair(tmp_path, np.zeros((3, 12, 12), np.uint8), name="shape2")
    with pytest.raises(DataError, match="shape") as e:
        _load(tmp_path, img2.name, lbl2.name)
    assert "\n" not in str(e.value)
    img3, lbl3 = _pair(tmp_path, np.zeros((2, 12, 12), np.uint8), name="aff", label_spacing=(0.9, 0.8, 2.0))
    with pytest.raises(DataError, match="not on the reference.s voxel grid: spacing"):
        _load(tmp_path, img3.name, lbl3.name)
    with pytest.raises(DataError, match="missing.nii.gz"):
        _load(tmp_path, "missing.nii.gz", lbl3.name)
    with pytest.raises(DataError, match="no 'training' section"):
        load_datalist_items(_datalist(tmp_path, [], key="other"), "training", LABELS, DataConfig())
