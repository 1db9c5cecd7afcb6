"""COCO JSON (polygons, compressed and uncompressed RLE) for 2D microscopy images -> instance targets."""

import json

import faster_coco_eval.core.mask as mask_utils
import numpy as np
import pytest
from skimage import io as skio

from medmrcnn.errors import DataError
from medmrcnn.labels import LabelMap
from medmrcnn.synthetic import make_microscopy_image
from medmrcnn.training.coco import load_coco_items

LABELS = LabelMap.from_names(["nucleus"])


def _write(tmp_path, seed=4):
    ph = make_microscopy_image(shape=(64, 80), n_nuclei=6, radius_px=(5, 9), seed=seed)
    skio.imsave(tmp_path / "img.png", ph.volume.array[0], check_contrast=False)
    inst = ph.gt_instances[0]
    anns = []
    for k, i in enumerate(sorted(ph.gt_classes), start=1):
        m = np.asfortranarray((inst == i).astype(np.uint8))
        rle = mask_utils.encode(m)
        if k % 3 == 0:  # uncompressed RLE, as some exporters write it
            flat = m.ravel(order="F")
            change = np.flatnonzero(np.diff(np.r_[0, flat, 2 if flat[-1] == 0 else 0]))
            runs = np.diff(np.r_[0, change]).tolist()
            seg = {"size": [64, 80], "counts": runs}
            assert mask_utils.decode(mask_utils.frPyObjects(seg, 64, 80)).astype(bool).tolist() == (inst == i).tolist()
        else:
            seg = {"size": rle["size"], "counts": rle["counts"].decode()}
        anns.append({"id": k, "image_id": 1, "category_id": 9, "segmentation": seg, "iscrowd": 0,
                     "area": int(m.sum()), "bbox": mask_utils.toBbox(rle).tolist()})
    # A square polygon and a crowd region (ignored).
    anns.append({"id": 100, "image_id": 1, "category_id": 9, "segmentation": [[60, 50, 70, 50, 70, 60, 60, 60]],
                 "iscrowd": 0, "area": 100, "bbox": [60, 50, 10, 10]})
    anns.append({"id": 101, "image_id": 1, "category_id": 9, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]],
                 "iscrowd": 1, "area": 25, "bbox": [0, 0, 5, 5]})
    coco = {"images": [{"id": 1, "file_name": "img.png", "height": 64, "width": 80}], "annotations": anns,
            "categories": [{"id": 9, "name": "nucleus"}, {"id": 3, "name": "debris"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    return ph


def test_coco_masks_decode_to_the_drawn_instances(tmp_path):
    ph = _write(tmp_path)
    (item,) = load_coco_items(tmp_path / "coco.json", LABELS)
    assert item.volume.shape == (1, 64, 80)
    np.testing.assert_array_equal(item.volume.array[0], ph.volume.array[0])
    n = len(ph.gt_classes)
    assert len(item.gt_classes) == n + 1 and set(item.gt_classes.values()) == {1}
    inst = item.gt_instances[0]
    poly = inst == n + 1  # painted last, so it wins pixels it shares with a nucleus
    assert poly[51:59, 61:69].all() and not poly[:45].any() and not poly[:, :55].any()
    for k, i in enumerate(sorted(ph.gt_classes), start=1):
        np.testing.assert_array_equal(inst == k, (ph.gt_instances[0] == i) & ~poly)
    # The crowd region is not an instance: its pixels keep whatever nucleus (or background) was there.
    np.testing.assert_array_equal(inst[:5, :5] > 0, ph.gt_instances[0][:5, :5] > 0)


def test_coco_errors_name_the_file(tmp_path):
    _write(tmp_path)
    coco = json.loads((tmp_path / "coco.json").read_text())
    coco["images"][0]["height"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="bad.json.*64x80"):
        load_coco_items(tmp_path / "bad.json", LABELS)
    with pytest.raises(DataError, match="no category"):
        load_coco_items(tmp_path / "coco.json", LabelMap.from_names(["cell"]))
