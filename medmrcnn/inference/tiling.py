"""Tiled inference for large images (whole slides, 8000 x 8000 px and beyond): overlapping tiles, seam-aware merge.

Tiles of `tile` x `tile` px overlap by `overlap` px. The overlaps are cut down their middle into cores that
partition the image; every tile keeps only the instances whose centre of mass lies in its own core. A cell cut by
a tile's edge has its visible part's centre within its radius of that edge, i.e. outside the core when
`overlap` >= the cell's diameter, while the neighbouring tile sees it whole with its centre inside that tile's
core: each cell comes out whole and once. Memory follows the tile, not the image: the network, the normalised
copy and the masks are per tile (the input array itself is only sliced), and intensities are normalised with
percentiles of the whole image (from a strided sample) so that tiles agree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from medmrcnn.inference.postprocess import remove_duplicates
from medmrcnn.inference.result import VolumeResult
from medmrcnn.structures import SliceInstances
from medmrcnn.transforms import check_intensity_fit, resolve_intensity
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)

SAMPLE_PIXELS = 4_000_000  # pixels drawn (strided) to estimate the whole image's percentiles


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` px covering `size` px with at least `overlap` px shared by neighbours."""
    if tile >= size:
        return [0]
    step = tile - overlap
    n = int(np.ceil((size - tile) / step)) + 1
    return [int(round(i * (size - tile) / (n - 1))) for i in range(n)]


def _cores(starts: list[int], tile: int, size: int) -> list[tuple[float, float]]:
    """[lo, hi) core of each tile along one axis: its span up to the middle of each overlap."""
    cuts = [0.0] + [(starts[i + 1] + min(starts[i] + tile, size)) / 2.0 for i in range(len(starts) - 1)] + [
        float(size)]
    return list(zip(cuts[:-1], cuts[1:]))


def _window_preset(volume: Volume, preset: str) -> str:
    """The preset tiles use: a fixed "ct:level,width" window equal to the whole image's 1st..99.5th percentiles."""
    if preset != "percentile":
        return preset
    a = volume.array
    stride = max(1, int(np.sqrt(a.size / SAMPLE_PIXELS)))
    lo, hi = (float(v) for v in np.percentile(a[:, ::stride, ::stride], [1.0, 99.5]))
    width = hi - lo if hi > lo else 1.0
    return f"ct:{lo + width / 2.0},{width}"


def predict_tiled(predictor, volume: Volume, *, tile: int = 1024, overlap: int = 128,
                  progress: Callable[[int], None] | None = None) -> VolumeResult:
    """The predictor's result for `volume`, computed tile by tile (module docstring); a volume that fits in one
    tile is predicted as a whole.

    Args:
        predictor: a SliceWisePredictor.
        volume: (z, y, x); stacks are tiled in-plane, every tile holding all z.
        tile, overlap: tile side and overlap in pixels; `overlap` should exceed the largest cell's diameter.
        progress: called with the number of tiles done, as they finish.
    """
    if overlap < 0 or tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must exceed twice the overlap ({overlap}), and overlap be >= 0")
    nz, h, w = volume.shape
    if h <= tile and w <= tile:
        return predictor.predict(volume)
    from medmrcnn.inference.predictor import SliceWisePredictor, warn_detection_cap

    fit_warnings = check_intensity_fit(predictor.cfg.intensity or predictor.model_cfg.intensity, volume,
                                       explicit=predictor.cfg.intensity is not None)
    for message in fit_warnings:
        log.warning("%s: %s", volume.source or "image", message)
    preset = resolve_intensity(predictor.cfg.intensity or predictor.model_cfg.intensity, volume.modality)
    tile_cfg = dataclasses.replace(predictor.cfg, intensity=_window_preset(volume, preset))
    per_tile = SliceWisePredictor(predictor.model, predictor.model_cfg, tile_cfg)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    kept: list[list[SliceInstances]] = [[] for _ in range(nz)]
    info: dict = {}
    capped = 0
    for y0, (cy0, cy1) in zip(ys, _cores(ys, tile, h)):
        for x0, (cx0, cx1) in zip(xs, _cores(xs, tile, w)):
            shift = np.eye(4)
            shift[:3, 3] = volume.affine[:3, :3] @ np.array([x0, y0, 0.0])
            sub = Volume(volume.array[:, y0:y0 + tile, x0:x0 + tile], shift @ volume.affine, modality=volume.modality,
                         source=volume.source)
            found, info = per_tile.predict_slices(sub, check_fit=False)
            capped += info.pop("slices_at_detection_cap") > 0
            for z, inst in enumerate(found):
                if len(inst):
                    kept[z].append(_in_core(inst, (y0, x0), (cy0, cy1, cx0, cx1), (h, w)))
            if progress is not None:
                progress(1)
    warn_detection_cap(volume, capped, "tile", predictor.model_cfg.detections_per_image)
    slices = [_merge(parts, (h, w), predictor.cfg.duplicate_overlap) for parts in kept]
    result = predictor.assemble(volume, slices)
    tiles = {"tile": tile, "overlap": overlap, "grid_yx": [len(ys), len(xs)], "intensity": tile_cfg.intensity,
             "at_detection_cap": capped}
    result.metadata.update(info | {"intensity_warnings": fit_warnings, "tiles": tiles})
    return result


def _in_core(inst: SliceInstances, origin_yx: tuple[int, int], core: tuple[float, float, float, float],
             image_size: tuple[int, int]) -> SliceInstances:
    """The instances of one tile whose centre of mass lies in the core, moved to whole-image coordinates."""
    y0, x0 = origin_yx
    cy0, cy1, cx0, cx1 = core
    keep = []
    for i, (box, mask) in enumerate(zip(inst.boxes, inst.masks)):
        my, mx = ndimage.center_of_mass(mask)
        cy, cx = y0 + box[1] + my + 0.5, x0 + box[0] + mx + 0.5  # pixel-centre convention
        if cy0 <= cy < cy1 and cx0 <= cx < cx1:
            keep.append(i)
    sel = inst[keep]
    return SliceInstances(image_size, sel.boxes + np.array([x0, y0, x0, y0]), sel.scores, sel.labels, sel.masks)


def _merge(parts: list[SliceInstances], image_size: tuple[int, int], duplicate_overlap: float) -> SliceInstances:
    """One slice's instances from all tiles, highest score first, duplicates across seams removed."""
    if not parts:
        return SliceInstances(image_size)
    merged = SliceInstances(image_size, np.concatenate([p.boxes for p in parts]),
                            np.concatenate([p.scores for p in parts]), np.concatenate([p.labels for p in parts]),
                            [m for p in parts for m in p.masks])
    order = np.argsort(-merged.scores, kind="stable")
    return remove_duplicates(merged[order], duplicate_overlap)
