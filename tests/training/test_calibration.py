"""`medmrcnn calibrate` on real nuclei: the best thresholds on validation data go into the checkpoint and are what
inference then uses (reproducing the calibrated score exactly); explicit options still win."""

from __future__ import annotations

import numpy as np

from medmrcnn.batch import load_predictor
from medmrcnn.cli import main
from medmrcnn.inference import SliceWisePredictor
from medmrcnn.io import load_volume
from medmrcnn.modeling import read_checkpoint
from medmrcnn.training.metrics import CellMatchAccumulator


def test_calibrated_thresholds_are_stored_and_used(nuclei, tmp_path, capsys):
    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", "--weights", str(nuclei.weights), "--data", str(nuclei.datalist), "-o", str(out),
                 "--device", "cpu", "--scores", "0.3,0.5,0.7", "--masks", "0.4,0.5", "--nms", "0.3,0.5"]) == 0
    assert "best: NMS" in capsys.readouterr().out
    cfg = read_checkpoint(out).config
    stored = cfg.extra["thresholds"]
    assert cfg.box_nms_thresh == stored["nms"] and stored["per_class"]["nucleus"]["score"] in (0.3, 0.5, 0.7)
    assert stored["grid"] == {"nms": [0.3, 0.5], "score": [0.3, 0.5, 0.7], "mask": [0.4, 0.5]}
    predictor = SliceWisePredictor.from_checkpoint(out, device="cpu")
    assert (predictor.cfg.score_threshold, predictor.cfg.mask_threshold) == (stored["score"], stored["mask"])
    # Inference with the stored thresholds reproduces the calibrated score on the validation part exactly.
    acc = CellMatchAccumulator()
    acc.add(nuclei.parts["val"][1], predictor.predict(load_volume(nuclei.datalist.parent / "val.tif")).instance_map)
    assert abs(acc.dsb_score() - stored["dsb_score"]) < 1e-4
    # The defaults (0.5 / 0.5 / NMS 0.5) are on the grid, so calibration is never worse than them on this data.
    plain = SliceWisePredictor.from_checkpoint(nuclei.weights, device="cpu")
    base = CellMatchAccumulator()
    base.add(nuclei.parts["val"][1], plain.predict(load_volume(nuclei.datalist.parent / "val.tif")).instance_map)
    assert stored["dsb_score"] >= base.dsb_score() - 1e-9
    batch_predictor, settings = load_predictor(out, device="cpu")
    assert batch_predictor.cfg.class_score_thresholds == {"nucleus": stored["per_class"]["nucleus"]["score"]}
    explicit, _ = load_predictor(out, device="cpu", score_threshold=0.9)
    assert explicit.cfg.score_threshold == 0.9 and explicit.cfg.class_score_thresholds == {}
    assert np.isfinite(stored["dsb_score"])
