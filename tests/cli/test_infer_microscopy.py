"""`medmrcnn infer` on microscopy as a Cellpose / StarDist user runs it: a multi-channel TIFF or a z-stack in, the
cell tools' outputs out by default (label TIFF, Fiji ROIs, QuPath GeoJSON, per-cell table)."""

from __future__ import annotations

import csv
import json

import numpy as np
import roifile
import tifffile

from medmrcnn.cli import main
from medmrcnn.io import load_volume

PIXEL_UM = 0.5


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_channel_tiff_gives_the_cell_outputs_by_default(nuclei, tmp_path):
    image, truth = nuclei.parts["test"]
    other = np.random.default_rng(0).integers(0, 50, image.shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "nuclei.tif", np.stack([other, image]), imagej=True,
                     resolution=(1 / PIXEL_UM, 1 / PIXEL_UM), metadata={"axes": "CYX", "unit": "um"})
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "nuclei.tif"), "-o", str(out), "--weights", str(nuclei.weights),
                 "--channel", "1", "--device", "cpu", "--quiet"]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    files = {p.name for p in folder.iterdir()}
    assert {"labels.tif", "rois.zip", "cells.geojson", "cells.csv", "report.json", "overlay.png"} <= files
    assert "labels.nii.gz" not in files
    labels = load_volume(folder / "labels.tif")
    assert labels.metadata["pixel_size_um"][1:] == [PIXEL_UM, PIXEL_UM]
    n = len(np.unique(labels.array)) - 1
    n_true = len(np.unique(truth)) - 1
    assert 0.8 * n_true <= n <= 1.2 * n_true  # the channel chosen is the nuclei, not the noise
    rows = _rows(folder / "cells.csv")
    assert len(rows) == n == len(roifile.roiread(folder / "rois.zip"))
    assert len(json.loads((folder / "cells.geojson").read_text())["features"]) == n
    for row in rows[:10]:
        mask = labels.array[0] == int(row["id"])
        assert float(row["area_um2"]) == mask.sum() * PIXEL_UM ** 2
        assert float(row["mean_intensity_ch1"]) == np.round(image[mask].mean(), 4)
        assert float(row["mean_intensity_ch0"]) == np.round(other[mask].mean(), 4)


def test_z_stack_is_segmented_slice_wise_and_linked_into_3d_cells(nuclei, tmp_path):
    image, _ = nuclei.parts["test"]
    stack = np.stack([image[:256], image[:256], image[:256]])  # three planes 1.5 µm apart: every cell spans them
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, resolution=(1 / PIXEL_UM, 1 / PIXEL_UM),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 1.5})
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "stack.tif"), "-o", str(out), "--weights", str(nuclei.weights),
                 "--device", "cpu", "--quiet"]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    labels = tifffile.imread(folder / "labels.tif")
    assert labels.shape == (3, 256, 256)
    rows = _rows(folder / "cells.csv")
    assert rows and all(float(r["volume_um3"]) == int(r["pixels"]) * PIXEL_UM ** 2 * 1.5 for r in rows)
    spans = [int(r["bbox_z1"]) - int(r["bbox_z0"]) for r in rows]
    assert np.mean([s == 3 for s in spans]) >= 0.9  # one 3D cell through the stack, not three 2D ones
    rois = roifile.roiread(folder / "rois.zip")
    assert {r.position for r in rois} == {1, 2, 3}
