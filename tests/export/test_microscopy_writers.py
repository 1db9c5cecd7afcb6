"""Microscopy outputs read back by the tools users open them with: tifffile, roifile (Fiji ROIs), json (QuPath)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import roifile
import tifffile
from skimage.draw import polygon as fill_polygon

from medmrcnn.export import write_cell_table, write_geojson, write_imagej_rois, write_label_image
from medmrcnn.inference import VolumeResult
from medmrcnn.io import load_volume
from medmrcnn.synthetic import Phantom, make_microscopy_image
from medmrcnn.volume import Volume, affine_from_geometry
from tests.inference.truth import result_from_truth


@pytest.fixture(scope="module")
def cells_2d() -> VolumeResult:
    return result_from_truth(make_microscopy_image(shape=(96, 112), n_nuclei=14, pixel_size_um=0.65, seed=4))


@pytest.fixture(scope="module")
def cells_3d() -> VolumeResult:
    """Three z planes 2 µm apart (0.5 µm pixels), two channels; the nuclei span the stack."""
    ph = make_microscopy_image(shape=(64, 72), n_nuclei=8, seed=5)
    labels = np.repeat(ph.gt_instances, 3, axis=0)
    image = np.repeat(ph.volume.array, 3, axis=0)
    channels = np.stack([image, (labels * 10).astype(np.uint16)])
    volume = Volume(image, affine_from_geometry((0.0005, 0.0005, 0.002), (0, 0, 0)), modality="SM",
                    metadata={"channels": channels})
    return result_from_truth(Phantom(volume, labels, ph.gt_classes, ph.labels))


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_label_tiff_keeps_ids_dtype_and_microns(cells_3d, tmp_path, dtype):
    result = VolumeResult(cells_3d.volume, cells_3d.instance_map.astype(dtype), cells_3d.class_map,
                          cells_3d.instances, cells_3d.labels)
    path = write_label_image(result, tmp_path / "labels.tif")
    back = tifffile.imread(path)
    assert back.dtype == dtype and np.array_equal(back, result.instance_map)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej if dtype == np.uint16 else tif.is_ome
    again = load_volume(path)  # our own reader finds the same z step and pixel size in µm
    assert again.metadata["pixel_size_um"] == pytest.approx([2.0, 0.5, 0.5])


def test_imagej_rois_round_trip_through_roifile(cells_2d, tmp_path):
    path = write_imagej_rois(cells_2d, tmp_path / "rois.zip")
    rois = roifile.roiread(path)
    assert len(rois) == cells_2d.num_instances >= 8
    imap = cells_2d.instance_map[0]
    for roi in rois:
        k = int(roi.name.split("-")[1])
        xy = roi.coordinates() - 0.5  # corner-origin -> pixel-centre indices
        filled = np.zeros(imap.shape, bool)
        rr, cc = fill_polygon(xy[:, 1], xy[:, 0], imap.shape)
        filled[rr, cc] = True
        assert roi.roitype == roifile.ROI_TYPE.POLYGON and _iou(filled, imap == k) > 0.8, roi.name


def test_imagej_rois_of_a_stack_carry_their_slice(cells_3d, tmp_path):
    rois = roifile.roiread(write_imagej_rois(cells_3d, tmp_path / "rois.zip"))
    assert len(rois) == 3 * cells_3d.num_instances
    assert sorted({r.position for r in rois}) == [1, 2, 3]  # ImageJ slice positions are 1-based


def test_geojson_polygons_match_the_cells(cells_2d, tmp_path):
    doc = json.loads(write_geojson(cells_2d, tmp_path / "cells.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == cells_2d.num_instances
    counts = np.bincount(cells_2d.instance_map.ravel())
    for f in doc["features"]:
        ring = np.asarray(f["geometry"]["coordinates"][0])
        assert f["geometry"]["type"] == "Polygon" and np.array_equal(ring[0], ring[-1])
        assert f["properties"]["objectType"] == "detection" and f["properties"]["classification"]["name"] == "nucleus"
        k = f["properties"]["measurements"]["id"]
        assert _area(ring) == pytest.approx(counts[k], rel=0.2)


def test_cell_table_areas_centroids_and_intensities(cells_2d, tmp_path):
    rows = list(csv.DictReader(open(write_cell_table(cells_2d, tmp_path / "cells.csv"))))
    assert len(rows) == cells_2d.num_instances
    imap, image = cells_2d.instance_map[0], cells_2d.volume.array[0]
    for row in rows:
        mask = imap == int(row["id"])
        assert float(row["area_um2"]) == pytest.approx(mask.sum() * 0.65 ** 2, rel=1e-3)
        ys, xs = np.nonzero(mask)
        assert float(row["centroid_x_um"]) == pytest.approx(xs.mean() * 0.65, abs=0.01)
        assert float(row["mean_intensity_ch0"]) == pytest.approx(image[mask].mean(), abs=0.01)


def test_cell_table_of_a_stack_has_volumes_and_every_channel(cells_3d, tmp_path):
    rows = list(csv.DictReader(open(write_cell_table(cells_3d, tmp_path / "cells.csv"))))
    for row in rows:
        mask = cells_3d.instance_map == int(row["id"])
        assert float(row["volume_um3"]) == pytest.approx(mask.sum() * 0.5 * 0.5 * 2.0, rel=1e-3)
        assert float(row["centroid_z_um"]) == pytest.approx(2.0)  # the middle of planes 0, 2, 4 µm
        assert float(row["mean_intensity_ch1"]) == pytest.approx(10 * int(row["id"]))
