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


def _predict(nuclei, volume, tile_size):
    predictor = SliceWisePredictor.from_checkpoint(nuclei.weights, device="cpu")
    predictor.cfg = dataclasses.replace(predictor.cfg, tile_size=tile_size, tile_overlap=OVERLAP)
    return predictor, predictor.predict(volume).instance_map[0]


def test_tiled_inference_is_as_good_as_whole_image_inference(nuclei, large):
    volume, truth = large
    seen = []
    original = SliceWisePredictor.predict_slices

    def spy(self, vol, progress=None, check_fit=True):
        seen.append(vol.shape)
        return original(self, vol, progress, check_fit)

    SliceWisePredictor.predict_slices = spy
    try:
        _, tiled = _predict(nuclei, volume, TILE)
    finally:
        SliceWisePredictor.predict_slices = original
    grid = len(tile_starts(512, TILE, OVERLAP))  # 4 x 4 tiles of 224 px over 512 x 512
    assert len(seen) == grid * grid and all(s[1] <= TILE and s[2] <= TILE for s in seen)  # never the image
    _, whole = _predict(nuclei, volume, None)
    scores = {name: match_cells(truth, pred, (0.5,))[0.5] for name, pred in (("tiled", tiled), ("whole", whole))}
    accuracy = {k: v["tp"] / (v["tp"] + v["fp"] + v["fn"]) for k, v in scores.items()}
    assert accuracy["tiled"] >= accuracy["whole"] - 0.03, scores


def test_cells_on_tile_seams_come_out_whole_and_once(nuclei, large):
    volume, truth = large
    starts = tile_starts(512, TILE, OVERLAP)
    edges = sorted(set(starts[1:]) | {s + TILE for s in starts[:-1]})
    on_seam = [i for i, b in enumerate(ndimage.find_objects(truth), start=1) if b is not None and any(
        b[0].start < e < b[0].stop or b[1].start < e < b[1].stop for e in edges)]  # cut by some tile's border

    def whole_and_split(pred):
        g_ids, _, inter, (g_sz, p_sz) = instance_overlaps(truth, pred)
        iou = inter / (g_sz[:, None] + p_sz[None, :] - inter)
        rows = [list(g_ids).index(i) for i in on_seam]
        whole = sum(iou[k].max(initial=0) >= 0.5 for k in rows)
        split = sum(np.count_nonzero(inter[k] > 0.2 * g_sz[k]) > 1 for k in rows)
        return whole, split

    tiled_whole, tiled_split = whole_and_split(_predict(nuclei, volume, TILE)[1])
    ref_whole, ref_split = whole_and_split(_predict(nuclei, volume, None)[1])
    assert len(on_seam) >= 20 and ref_whole >= 0.7 * len(on_seam)
    # A cell cut by a tile border is found whole as often as without tiles, and not cut into pieces more often.
    assert tiled_whole >= ref_whole - 1 and tiled_split <= ref_split + 1, (tiled_whole, ref_whole, tiled_split,
                                                                            ref_split, len(on_seam))
