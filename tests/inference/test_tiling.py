"""Tiled inference of a large image: the same cells as whole-image inference, each whole and once across seams,
with the network only ever seeing tile-sized inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from medmrcnn.inference import SliceWisePredictor
from medmrcnn.inference.tiling import predict_tiled, tile_starts
from medmrcnn.training.metrics import instance_overlaps, match_cells
from medmrcnn.volume import Volume, affine_from_geometry

TILE, OVERLAP = 224, 96  # overlap ~3 nucleus diameters: the network sees the same context as on the whole image


def test_tile_starts_cover_the_image_with_the_overlap():
    assert tile_starts(100, 128, 32) == [0]
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))


@pytest.fixture(scope="module")
def large(nuclei):
    """A 512 x 512 mosaic of the real held-out crop (a mirrored copy beside it) and its truth."""
    image, truth = nuclei.parts["test"]
    mosaic = np.concatenate([image, image[:, ::-1]], axis=1)
    labels = np.concatenate([truth, np.where(truth > 0, truth + truth.max(), 0)[:, ::-1]], axis=1)
    volume = Volume(mosaic[None], affine_from_geometry((0.0005,) * 3, (0, 0, 0)), modality="SM")
    return volume, relabel_sequential(labels)[0]


def test_tiled_inference_matches_whole_image_inference(nuclei, large):
    volume, truth = large
    whole = SliceWisePredictor.from_checkpoint(nuclei.weights, device="cpu")
    whole.cfg = dataclasses.replace(whole.cfg, tile_size=None)
    seen = []
    tiled = SliceWisePredictor(whole.model, whole.model_cfg, dataclasses.replace(whole.cfg, tile_size=TILE,
                                                                                 tile_overlap=OVERLAP))
    original = SliceWisePredictor.predict_slices

    def spy(self, vol, progress=None):
        seen.append(vol.shape)
        return original(self, vol, progress)

    SliceWisePredictor.predict_slices = spy
    try:
        result = tiled.predict(volume)
    finally:
        SliceWisePredictor.predict_slices = original
    grid = [len(tile_starts(512, TILE, OVERLAP))] * 2  # 4 x 4 tiles of 224 px over 512 x 512
    assert len(seen) == grid[0] * grid[1] and all(s[1] <= TILE and s[2] <= TILE for s in seen)  # never the image
    assert result.metadata["tiles"]["grid_yx"] == grid
    reference = whole.predict(volume).instance_map[0]
    agreement = match_cells(reference, result.instance_map[0], (0.5, 0.8))
    n_ref = len(np.unique(reference)) - 1
    assert agreement[0.8]["tp"] >= 0.9 * n_ref and agreement[0.5]["fp"] <= 0.05 * n_ref, agreement


def test_cells_on_tile_seams_come_out_whole_and_once(nuclei, large):
    volume, _ = large
    predictor = SliceWisePredictor.from_checkpoint(nuclei.weights, device="cpu")
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=None)
    reference = predictor.predict(volume).instance_map[0]  # the whole image at once
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=TILE, tile_overlap=OVERLAP)
    tiled = predictor.predict(volume).instance_map[0]
    starts = tile_starts(512, TILE, OVERLAP)
    edges = sorted(set(starts[1:]) | {s + TILE for s in starts[:-1]})
    boxes = ndimage.find_objects(reference)
    on_seam = [i for i, b in enumerate(boxes, start=1) if b is not None and any(
        b[0].start < e < b[0].stop or b[1].start < e < b[1].stop for e in edges)]  # cut by some tile's border
    r_ids, t_ids, inter, (r_sz, t_sz) = instance_overlaps(reference, tiled)
    iou = inter / (r_sz[:, None] + t_sz[None, :] - inter)
    whole_once = 0
    for i in on_seam:
        k = list(r_ids).index(i)
        pieces = np.count_nonzero(inter[k] > 0.1 * r_sz[k])
        whole_once += pieces == 1 and iou[k].max() >= 0.8
    assert len(on_seam) >= 10 and whole_once >= 0.9 * len(on_seam), (whole_once, len(on_seam))
