"""Real nuclei (DSB2018 image shipped in the stardist wheel): a short CPU fine-tune beats Otsu + watershed on the
held-out part of the image (columns 256..511; training used columns 0..255 only)."""

from __future__ import annotations

import numpy as np

from medmrcnn.bench.nuclei import SPLIT, object_scores, tuned_watershed, watershed_nuclei
from medmrcnn.inference import SliceWisePredictor
from medmrcnn.io import load_volume


def test_split_keeps_training_and_test_pixels_apart(nuclei):
    fit, val, test = (SPLIT[k] for k in ("fit", "val", "test"))
    assert fit[1].stop <= test[1].start and val[1].stop <= test[1].start and fit[0].stop <= val[0].start
    assert len(np.unique(nuclei.parts["test"][1])) - 1 >= 50  # real annotated nuclei, not a toy


def test_finetuned_model_beats_watershed_on_held_out_nuclei(nuclei):
    image, truth = nuclei.parts["test"]
    distance, sigma = tuned_watershed(nuclei.parts)  # the baseline is tuned on the training parts too
    baseline = object_scores(truth, watershed_nuclei(image, distance, sigma))
    predictor = SliceWisePredictor.from_checkpoint(nuclei.weights, device="cpu")
    ours = object_scores(truth, predictor.predict(load_volume(nuclei.datalist.parent / "test.tif")).instance_map[0])
    assert ours["accuracy_50"] >= baseline["accuracy_50"] + 0.05, (ours, baseline)
    assert ours["dsb_score"] >= baseline["dsb_score"] + 0.05, (ours, baseline)
