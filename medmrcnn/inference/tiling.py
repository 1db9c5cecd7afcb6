"""Tiled inference for large images (whole slides, 8000 x 8000 px and beyond): overlapping tiles, seam-aware merge.

Tiles of `tile` x `tile` px overlap by `overlap` px. The overlaps are cut down their middle into cores that
partition the image; every tile keeps only the instances whose centre of mass lies in its own core. A cell cut by
a tile's edge has its visible part's centre within its radius of that edge, i.e. outside the core when
`overlap` >= the cell's diameter, while the neighbouring tile sees it whole with its centre inside that tile's
core: each cell comes out whole and once. A crowded tile (more cells than one pass finds reliably: the detection
limit reached, or a quarter of it kept; predictor.crowded) is tiled again at half its side, its core split the
same way, until tiles are no longer crowded or would be no larger than twice the overlap; the starting side is
halved first while the image's first tile is crowded, so that a uniformly dense slide is tiled once. Memory follows the tile, not the image: the network, the normalised
copy and the masks are per tile (the input array itself is only sliced), and intensities are normalised with
percentiles of the whole image (from a strided sample) so that tiles agree.
"""

from __future__ import annotations

import dataclasses
import logging

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


def predict_tiled(predictor, volume: Volume, *, tile: int = 1024, overlap: int = 128) -> VolumeResult:
    """The predictor's result for `volume`, computed tile by tile (module docstring); a volume that fits in one
    tile is predicted as a whole.

    Args:
        predictor: a SliceWisePredictor.
        volume: (z, y, x); stacks are tiled in-plane, every tile holding all z.
        tile, overlap: tile side and overlap in pixels; `overlap` should exceed the largest cell's diameter.
    """
    if overlap < 0 or tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must exceed twice the overlap ({overlap}), and overlap be >= 0")
    nz, h, w = volume.shape
    if h <= tile and w <= tile:
        return predictor.predict(volume)
    from medmrcnn.inference.predictor import SliceWisePredictor, crowded, warn_detection_cap

    fit_warnings = check_intensity_fit(predictor.cfg.intensity or predictor.model_cfg.intensity, volume,
                                       explicit=predictor.cfg.intensity is not None)
    for message in fit_warnings:
        log.warning("%s: %s", volume.source or "image", message)
    preset = resolve_intensity(predictor.cfg.intensity or predictor.model_cfg.intensity, volume.modality)
    tile_cfg = dataclasses.replace(predictor.cfg, intensity=_window_preset(volume, preset))
    per_tile = SliceWisePredictor(predictor.model, predictor.model_cfg, tile_cfg)
    kept: list[list[SliceInstances]] = [[] for _ in range(nz)]
    run = {"info": {}, "capped": 0, "split": 0}
    cap = predictor.model_cfg.detections_per_image

    def predict_region(y: tuple[int, int], x: tuple[int, int], core: tuple[float, float, float, float],
                       side: int) -> None:
        """Tile the image span y x x with tiles of `side` px, keeping the instances centred in `core`; a crowded
        tile (predictor.crowded) is tiled again at half its side while that still exceeds twice the overlap."""
        ys, xs = tile_starts(y[1] - y[0], side, overlap), tile_starts(x[1] - x[0], side, overlap)
        for dy, (cy0, cy1) in zip(ys, _cores(ys, side, y[1] - y[0])):
            for dx, (cx0, cx1) in zip(xs, _cores(xs, side, x[1] - x[0])):
                y0, x0 = y[0] + dy, x[0] + dx
                y1, x1 = min(y0 + side, y[1]), min(x0 + side, x[1])
                sub_core = (max(core[0], y[0] + cy0), min(core[1], y[0] + cy1),
                            max(core[2], x[0] + cx0), min(core[3], x[0] + cx1))
                if sub_core[0] >= sub_core[1] or sub_core[2] >= sub_core[3]:
                    continue
                shift = np.eye(4)
                shift[:3, 3] = volume.affine[:3, :3] @ np.array([x0, y0, 0.0])
                sub = Volume(volume.array[:, y0:y1, x0:x1], shift @ volume.affine, modality=volume.modality,
                             source=volume.source)
                found, tile_info = per_tile.predict_slices(sub, check_fit=False)
                if crowded(tile_info, cap) and side // 2 > 2 * overlap:
                    run["split"] += 1
                    predict_region((y0, y1), (x0, x1), sub_core, side // 2)
                else:
                    run["capped"] += tile_info.pop("slices_at_detection_cap") > 0
                    tile_info.pop("most_objects_on_a_slice")
                    run["info"] = tile_info
                    for z, inst in enumerate(found):
                        if len(inst):
                            kept[z].append(_in_core(inst, (y0, x0), sub_core, (h, w)))

    tile = _uncrowded_side(per_tile, volume, tile, overlap)
    predict_region((0, h), (0, w), (0.0, float(h), 0.0, float(w)), tile)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    capped, info = run["capped"], run["info"]
    warn_detection_cap(volume, capped, "tile", predictor.model_cfg.detections_per_image)
    slices = [_merge(parts, (h, w), predictor.cfg.duplicate_overlap) for parts in kept]
    result = predictor.assemble(volume, slices)
    tiles = {"tile": tile, "overlap": overlap, "grid_yx": [len(ys), len(xs)], "intensity": tile_cfg.intensity,
             "split_crowded": run["split"], "at_detection_cap": capped}
    result.metadata.update(info | {"intensity_warnings": fit_warnings, "tiles": tiles})
    return result


def _uncrowded_side(per_tile, volume: Volume, tile: int, overlap: int) -> int:
    """The tile side to start from: `tile`, halved while the image's first tile is crowded (predictor.crowded) and
    halving leaves more than twice the overlap. Whole slides of dense cells are then tiled once at a side that
    fits, instead of every tile being predicted at each side on the way down."""
    from medmrcnn.inference.predictor import crowded

    while tile // 2 > 2 * overlap:
        sub = Volume(volume.array[:, :tile, :tile], volume.affine, modality=volume.modality, source=volume.source)
        if not crowded(per_tile.predict_slices(sub, check_fit=False)[1], per_tile.model_cfg.detections_per_image):
            break
        tile //= 2
    return tile


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
