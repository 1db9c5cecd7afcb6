"""`medmrcnn demo` end to end with the bundled demo weights, checked against the phantom with independent readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medmrcnn.batch import DEMO_WEIGHTS
from medmrcnn.cli import main
from medmrcnn.demo import REPORT
from medmrcnn.dicomseg import read_seg
from medmrcnn.io import load_volume
from medmrcnn.synthetic import CT_LABELS
from tests.dicomseg.seg_tools import assert_dciodvfy_clean
from tests.masks import dice


@pytest.mark.slow
def test_demo_segments_the_phantom(tmp_path, capsys):
    assert DEMO_WEIGHTS.is_file(), "the demo weights are part of the package (configs/demo.yaml makes them)"
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    # Everything it says it wrote exists.
    wanted = ("input (DICOM series)", "true labels (NIfTI)", "DICOM-SEG", "NIfTI class labels", "JSON report",
              "overlay PNG")
    paths = {label: Path(line[len(label):].strip()) for line in printed.splitlines() for label in wanted
             if line.startswith(label + " ")}
    assert sorted(paths) == sorted(wanted), printed
    assert all(p.exists() for p in paths.values())
    report = json.loads((out / REPORT).read_text())
    # The bar: every true organ and tumour found with Dice >= 0.7 (instance level, from the demo's report)...
    for finding in report["findings"]:
        assert finding["dice"] >= 0.7, finding

    # ... and per class, from the label maps as SimpleITK reads them: prediction against the phantom's truth (a false
    # positive anywhere lowers this).
    labels = sitk.ReadImage(str(paths["NIfTI class labels"]))
    truth = sitk.ReadImage(str(paths["true labels (NIfTI)"]))
    series = sitk.ImageSeriesReader()
    series.SetFileNames(series.GetGDCMSeriesFileNames(str(paths["input (DICOM series)"])))
    ct = series.Execute()
    for image in (labels, truth):
        assert image.GetSize() == ct.GetSize() and np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
        assert np.allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    predicted, true = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(truth)
    model_ids = json.loads(paths["JSON report"].read_text())["labels"]
    for name, cid in CT_LABELS.to_dict().items():
        assert dice(predicted == model_ids[name], true == cid) >= 0.7, name

    # The DICOM-SEG is valid for dciodvfy and reads back onto the series as the same label map.
    assert_dciodvfy_clean(paths["DICOM-SEG"])
    seg = read_seg(paths["DICOM-SEG"], reference=load_volume(paths["input (DICOM series)"]))
    back = np.zeros_like(predicted)
    for s in seg.segments:
        back[seg.instance_map.array == s.number] = model_ids[s.class_name]
    assert np.array_equal(back, predicted)
    with Image.open(paths["overlay PNG"]) as png:
        assert png.format == "PNG" and min(png.size) >= 256
