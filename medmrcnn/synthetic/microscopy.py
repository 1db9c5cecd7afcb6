"""Fluorescence-microscopy-like images of touching nuclei with exact instance truth."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medmrcnn.labels import LabelMap
from medmrcnn.synthetic.ct import Phantom
from medmrcnn.volume import Volume, affine_from_geometry

MICROSCOPY_LABELS = LabelMap.from_names(["nucleus"])


def make_microscopy_image(
    shape: tuple[int, int] = (256, 256),
    n_nuclei: int = 40,
    radius_px: tuple[float, float] = (5.0, 14.0),
    pixel_size_um: float = 0.5,
    touching: float = 0.35,
    seed: int = 0,
) -> Phantom:
    """A uint16 image (one slice) of elliptical nuclei, some touching, with varied size and brightness.

    Touching nuclei are split along the line of equal normalised distance, as a watershed would.
    Args:
        shape: (y, x) pixels.
        n_nuclei: nuclei attempted (fewer when the field fills up).
        radius_px: range of the major radius.
        pixel_size_um: pixel size in micrometres (stored in the affine as mm).
        touching: fraction of nuclei placed next to an existing one.
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    brightness: list[float] = []
    centres: list[tuple[float, float, float]] = []
    for _ in range(n_nuclei * 20):
        if len(centres) >= n_nuclei:
            break
        r = rng.uniform(*radius_px)
        if centres and rng.random() < touching:
            cy, cx, cr = centres[int(rng.integers(len(centres)))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = (cr + r) * rng.uniform(0.8, 0.95)
            y0, x0 = cy + dist * np.sin(ang), cx + dist * np.cos(ang)
        else:
            y0, x0 = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
        if not (r + 1 < y0 < h - r - 1 and r + 1 < x0 < w - r - 1):
            continue
        if any(np.hypot(y0 - cy, x0 - cx) < 0.75 * (r + cr) for cy, cx, cr in centres):
            continue
        ecc, theta = rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
        dy, dx = yy - y0, xx - x0
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        d = np.sqrt((u / r) ** 2 + (v / (r * ecc)) ** 2)
        win = (d <= 1.0) & (d < best)
        best[win] = d[win]
        labels[win] = len(centres) + 1
        centres.append((y0, x0, r))
        brightness.append(rng.uniform(0.35, 1.0))
    # Drop nuclei that lost nearly all their pixels to neighbours, and renumber 1..N.
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    keep = ids[counts >= 12]
    lut = np.zeros(len(centres) + 1, dtype=np.uint16)
    lut[keep] = np.arange(1, len(keep) + 1)
    labels = lut[labels]
    intensity = np.zeros(shape, dtype=np.float32)
    for new_id, old_id in enumerate(keep, start=1):
        m = labels == new_id
        intensity[m] = brightness[old_id - 1] * (1.0 - 0.3 * best[m] ** 2)
    img = ndimage.gaussian_filter(intensity, 1.0) * 3000 + 200
    img = rng.poisson(np.clip(img, 0, None)).astype(np.float32) + rng.normal(0, 20, shape)
    img = np.clip(img, 0, 65535).astype(np.uint16)
    s = pixel_size_um / 1000.0
    volume = Volume(img[None], affine_from_geometry((s, s, s), (0.0, 0.0, 0.0)), modality="SM",
                    metadata={"description": f"synthetic microscopy seed {seed}"})
    classes = {i: MICROSCOPY_LABELS.id_of("nucleus") for i in range(1, len(keep) + 1)}
    return Phantom(volume, labels[None], classes, MICROSCOPY_LABELS)
