"""Learning bar: a model trained from scratch on generated nuclei reaches mask AP50 >= 0.8 on held-out images,
and `medmrcnn evaluate` measures the same model on a COCO export of other held-out images."""

import json

import faster_coco_eval.core.mask as mask_utils
import numpy as np
import pytest
from skimage import io as skio

from medmrcnn.cli import main
from medmrcnn.modeling import load_model
from medmrcnn.synthetic import make_microscopy_image
from medmrcnn.training import train
from tests.training.conftest import micro_train_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("learning") / "run"
    cfg = micro_train_config(out, epochs=2, steps_per_epoch=40, eval_every=2,
                             data__phantom__n_val=3, data__phantom__n_train=8)
    return train(cfg, progress=False)


def test_training_from_scratch_reaches_mask_ap50_on_held_out_phantoms(trained):
    val = trained.metrics[-1]["val"]
    assert val["mask_AP50"] >= 0.8, val
    assert val["bbox_AP50"] >= 0.8, val
    assert trained.metrics[-1]["train"]["loss"] < trained.metrics[0]["train"]["loss"]
    _, model_cfg = load_model(trained.best)
    assert model_cfg.labels == ("nucleus",)
    saved = json.loads((trained.output / "metrics.json").read_text())
    assert saved[-1]["val"]["mask_AP50"] == val["mask_AP50"] and saved[-1]["best"]


def _coco_export(folder, seeds):
    images, anns = [], []
    for n, seed in enumerate(seeds, start=1):
        ph = make_microscopy_image(shape=(104, 104), n_nuclei=7, seed=seed)
        skio.imsave(folder / f"{seed}.png", ph.volume.array[0], check_contrast=False)
        images.append({"id": n, "file_name": f"{seed}.png", "height": 104, "width": 104})
        for i in sorted(ph.gt_classes):
            rle = mask_utils.encode(np.asfortranarray((ph.gt_instances[0] == i).astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": 1, "iscrowd": 0,
                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                         "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
    path = folder / "test.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "nucleus"}]}))
    return path, len(anns)


def test_evaluate_cli_prints_a_table_and_writes_json(trained, tmp_path, capsys):
    data, n_nuclei = _coco_export(tmp_path, seeds=[9001, 9002])
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--weights", str(trained.best), "--data", str(data), "-o", str(out), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "masks" in table and "nucleus" in table and str(out) in table
    report = json.loads(out.read_text())
    assert report["n_items"] == 2
    assert report["slices"]["mask_AP50"] >= 0.8
    lesions = report["volumes"]["lesions"]["nucleus"]
    assert lesions["n_gt"] == n_nuclei
    assert lesions["sensitivity"] >= 0.8 and lesions["fp_per_volume"] <= 2
    assert report["volumes"]["dice"]["nucleus"] >= 0.8
    rows = [r for item in report["volumes"]["items"] for r in item["instances"]]
    assert sum(r["gt_id"] is not None for r in rows) == n_nuclei
