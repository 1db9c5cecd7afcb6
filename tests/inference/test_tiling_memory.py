"""Whole-slide images: tiled inference allocates per tile, not per image, and the seam merge is not quadratic in
the number of cells (an 8192 x 8192 image holds tens of thousands of nuclei; docs/microscopy.md "Large images")."""

from __future__ import annotations

import dataclasses
import logging
import tracemalloc

import numpy as np
import pytest

from medmrcnn.inference import SliceWisePredictor
from medmrcnn.inference import tiling
from medmrcnn.inference.postprocess import remove_duplicates
from medmrcnn.structures import SliceInstances
from medmrcnn.volume import Volume, affine_from_geometry
from tests.masks import centre, dice

SIZE, TILE, OVERLAP = 1536, 384, 64  # 5 x 5 tiles of the real nuclei image mirrored to 1536 x 1536 px


def _random_instances(n: int, size: int, seed: int) -> SliceInstances:
    """n disc-like masks scattered over a size x size slice, many overlapping, sorted by descending score."""
    rng = np.random.default_rng(seed)
    boxes, masks = [], []
    for _ in range(n):
        r = int(rng.integers(2, 12))
        x0, y0 = (int(v) for v in rng.integers(0, size - 2 * r, 2))
        yy, xx = np.mgrid[:2 * r, :2 * r]
        masks.append((yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2 <= r * r)
        boxes.append((x0, y0, x0 + 2 * r, y0 + 2 * r))
    return SliceInstances((size, size), np.array(boxes), np.sort(rng.random(n))[::-1].copy(),
                          rng.integers(1, 3, n), masks)


def test_sparse_overlaps_equal_the_dense_pixel_intersection():
    a, b = _random_instances(300, 200, 0), _random_instances(250, 200, 1)
    dense = np.zeros((len(a), len(b)), np.int64)
    for i in range(len(a)):
        fa = a.full_mask(i)
        for j in range(len(b)):
            dense[i, j] = np.count_nonzero(fa & b.full_mask(j))
    i, j, n = a.overlaps(b)
    assert (n > 0).all() and len(i) == np.count_nonzero(dense) > 100
    assert np.array_equal(a.intersection(b), dense)


def test_duplicate_removal_keeps_what_the_pairwise_rule_keeps():
    inst = _random_instances(400, 160, 2)
    dense = inst.intersection(inst)
    inside = (dense / np.maximum(inst.area(), 1)[:, None] >= 0.5) & (inst.labels[:, None] == inst.labels[None, :])
    keep: list[int] = []
    for i in range(len(inst)):
        if not any(inside[i, j] for j in keep):
            keep.append(i)
    kept = remove_duplicates(inst, 0.5)
    assert 0 < len(kept) < len(inst) and np.array_equal(kept.boxes, inst.boxes[keep])


@pytest.fixture(scope="module")
def mosaic() -> Volume:
    """The real DSB2018 nuclei image (512 x 512) mirrored to SIZE x SIZE: about 1100 nuclei, none cut at the joins."""
    from medmrcnn.bench.nuclei import stardist_nuclei_2d

    image, _ = stardist_nuclei_2d()
    reps = -(-SIZE // image.shape[0])
    rows = [np.hstack([image[::(-1) ** r, ::(-1) ** c] for c in range(reps)]) for r in range(reps)]
    return Volume(np.vstack(rows)[None, :SIZE, :SIZE].copy(), affine_from_geometry((0.0005,) * 3, (0, 0, 0)),
                  modality="SM")


def _peak_bytes(predictor: SliceWisePredictor, volume: Volume):
    """(result, peak bytes numpy allocated during the prediction beyond what was held before it)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = predictor.predict(volume)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


def test_tiled_prediction_memory_is_bounded_by_the_tile_not_the_image(nuclei, mosaic, monkeypatch, caplog):
    """Beyond its own label maps (3 bytes / pixel), tiled prediction of a 1536 x 1536 image allocates less than one
    float32 copy of the image (4 bytes / pixel), which a whole-image pass makes (and more); tiles hold far fewer
    nuclei than the model's detection limit, so no warning."""
    monkeypatch.setattr(tiling, "SAMPLE_PIXELS", 250_000)  # percentile sample: a constant, not the image
    predictor = SliceWisePredictor.from_checkpoint(nuclei.weights, device="cpu")
    pixels = SIZE * SIZE
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=TILE, tile_overlap=OVERLAP)
    with caplog.at_level(logging.WARNING):
        result, tiled_peak = _peak_bytes(predictor, mosaic)
    maps = result.instance_map.nbytes + result.class_map.nbytes
    assert result.metadata["tiles"]["grid_yx"] == [5, 5] and result.num_instances > 600
    assert result.metadata["tiles"]["at_detection_cap"] == 0 and "limit" not in caplog.text
    assert tiled_peak - maps < 4 * pixels, (tiled_peak, maps)
    # The same measure sees a whole-image pass: its float copy alone breaks the bound.
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=None)
    _, whole_peak = _peak_bytes(predictor, mosaic)
    assert whole_peak - maps > 4 * pixels, (whole_peak, maps)


def _capped_predictor(nuclei, cap: int) -> SliceWisePredictor:
    predictor = SliceWisePredictor.from_checkpoint(nuclei.weights, device="cpu")
    predictor.model.roi_heads.detections_per_img = predictor.model_cfg.detections_per_image = cap
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=TILE, tile_overlap=OVERLAP)
    return predictor


def test_crowded_tiles_are_split_until_they_fit(nuclei, mosaic, caplog):
    """Where nuclei are denser than one pass finds reliably, tiles are tiled again at half their side: the nuclei
    come out as with a limit no tile reaches, each once, and nothing is reported lost. The first tile is empty
    background, so the starting side stays and the crowded tiles split on their own."""
    array = mosaic.array[:, :TILE, :2 * TILE].copy()
    array[:, :, :TILE] = array.min()
    crop = Volume(array, mosaic.affine, modality="SM", source="big.tif")
    reference = _capped_predictor(nuclei, 400).predict(crop)
    assert reference.metadata["tiles"]["split_crowded"] == 0
    with caplog.at_level(logging.WARNING):
        result = _capped_predictor(nuclei, 40).predict(crop)
    assert result.metadata["tiles"]["tile"] == TILE and result.metadata["tiles"]["split_crowded"] >= 1
    assert result.metadata["tiles"]["at_detection_cap"] == 0 and "limit" not in caplog.text
    assert not result.instance_map[:, :, :TILE - OVERLAP].any()
    assert reference.num_instances <= result.num_instances <= 1.15 * reference.num_instances, (
        result.num_instances, reference.num_instances)
    recovered = 0  # nuclei of the reference run found again, with the same mask
    for i in range(1, reference.num_instances + 1):
        theirs = reference.instance_map == i
        mine = result.instance_map[centre(theirs)]
        recovered += mine > 0 and dice(theirs, result.instance_map == mine) >= 0.8
    assert recovered >= 0.9 * reference.num_instances, (recovered, reference.num_instances)


def test_a_uniformly_crowded_image_starts_from_a_smaller_tile(nuclei, mosaic):
    """When the first tile is crowded, the whole image is tiled at a side that fits rather than split tile by tile."""
    crop = Volume(mosaic.array[:, :640, :640].copy(), mosaic.affine, modality="SM", source="big.tif")
    result = _capped_predictor(nuclei, 40).predict(crop)
    assert result.metadata["tiles"]["tile"] == TILE // 2 and result.metadata["tiles"]["at_detection_cap"] == 0
    assert result.num_instances > 150


def test_a_crowded_whole_image_is_tiled(nuclei, mosaic):
    """An image smaller than the tile whose single pass is crowded is predicted in tiles of half its side."""
    crop = Volume(mosaic.array[:, :512, :512].copy(), mosaic.affine, modality="SM", source="small.tif")
    predictor = _capped_predictor(nuclei, 40)
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=2048, tile_overlap=64)
    result = predictor.predict(crop)
    assert result.metadata["tiles"]["tile"] == 256 and result.num_instances > 80


def test_tiles_too_small_to_split_report_what_the_limit_lost(nuclei, mosaic, caplog):
    """When halving would leave tiles no larger than twice the overlap, a warning names the fix."""
    predictor = _capped_predictor(nuclei, 3)
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=160, tile_overlap=64)
    crop = Volume(mosaic.array[:, :300, :300].copy(), mosaic.affine, modality="SM", source="big.tif")
    with caplog.at_level(logging.WARNING):
        result = predictor.predict(crop)
    capped = result.metadata["tiles"]["at_detection_cap"]
    assert capped > 0 and result.metadata["tiles"]["split_crowded"] == 0
    assert f"big.tif: {capped} tile(s) reached the model's limit of 3 detections" in caplog.text
    assert "--tile-size" in caplog.text


def test_infer_cli_writes_every_microscopy_output_of_a_tiled_tiff(nuclei, mosaic, tmp_path):
    """`medmrcnn infer --tile-size` on a TIFF larger than the tile: the labels TIFF (with its pixel size), ROI zip,
    GeoJSON and cell table all describe the same cells, and the report records the tiling."""
    import json

    import roifile
    import tifffile

    from medmrcnn.cli import main

    image = tmp_path / "slide.tif"
    tifffile.imwrite(image, mosaic.array[0, :896, :896], imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um"})
    out = tmp_path / "out"
    assert main(["infer", str(image), "-o", str(out), "--weights", str(nuclei.weights), "--device", "cpu",
                 "--tile-size", str(TILE), "--tile-overlap", str(OVERLAP), "--quiet"]) == 0
    (study,) = [p for p in out.iterdir() if p.is_dir()]
    report = json.loads((study / "report.json").read_text())
    assert report["run"]["tiles"]["grid_yx"] == [3, 3] and report["run"]["tiles"]["at_detection_cap"] == 0
    with tifffile.TiffFile(study / "labels.tif") as tif:
        labels = tif.asarray()
        num, den = tif.pages[0].tags["XResolution"].value  # pixels per µm: 0.5 µm pixels kept
    assert num / den == pytest.approx(2.0)
    ids = set(np.unique(labels)) - {0}
    n = report["summary"]["n_instances"]
    assert labels.shape == (896, 896) and len(ids) == n > 200
    rows = (study / "cells.csv").read_text().strip().splitlines()[1:]
    features = json.loads((study / "cells.geojson").read_text())["features"]
    rois = roifile.roiread(study / "rois.zip")
    assert len(rows) == len(features) == len(rois) == n
    assert {f["properties"]["measurements"]["id"] for f in features} == ids
