"""MR-like phantoms of thin structures in large boxes: a myocardium-like ring around a bright blood pool, a
cortex-like folded ribbon, a rim-enhancing lesion around its necrotic core, and a compact organ for comparison.

Every thin structure has a known wall thickness (in mm, constant along it), drawn from `thickness_mm`; masks are
exact at pixel centres (a pixel belongs to a wall when its centre lies within the wall).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from medmrcnn.labels import LabelMap
from medmrcnn.synthetic.ct import Phantom
from medmrcnn.volume import Volume, affine_from_geometry

WALL_LABELS = LabelMap.from_names(["ring", "ribbon", "rim", "organ"])
# Grey levels (arbitrary MR units): dark wall between bright blood and mid-grey tissue, as in cine bSSFP.
_TISSUE, _BLOOD, _WALL, _RIBBON, _RIM, _CORE, _ORGAN = 0.5, 1.0, 0.15, 0.9, 1.0, 0.2, 0.8


def _distance_to_curve(py: np.ndarray, px: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Distance from points (py, px) to a densely sampled curve [K, 2] (y, x), in the same units."""
    dist, _ = cKDTree(curve).query(np.stack([py.ravel(), px.ravel()], axis=1))
    return dist.reshape(py.shape)


def make_wall_phantom(
    shape: tuple[int, int, int] = (6, 192, 192),
    spacing: tuple[float, float, float] = (4.0, 0.75, 0.75),
    thickness_mm: tuple[float, float] = (1.5, 5.0),
    noise: float = 0.05,
    seed: int = 0,
) -> Phantom:
    """A float32 MR-like volume with a ring, a ribbon, a rim-enhancing lesion and a compact organ.

    Args:
        shape: (z, y, x) voxels; the in-plane layout needs at least 160 x 160 pixels at 0.75 mm.
        spacing: (z, y, x) voxel size in mm.
        thickness_mm: range of the wall thickness of the ring, the ribbon and the lesion's rim.
        noise: standard deviation of the Gaussian noise (the tissue is 0.5, the blood pool 1.0).
        seed: random seed; the same seed gives the same phantom.
    Returns:
        Phantom with classes ring (1), ribbon (2), rim (3), organ (4), one instance each (ids 1-4 in that order);
        `volume.metadata["wall_thickness_mm"]` gives the true thickness by class name.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sz, sy, sx = spacing
    fov_y, fov_x = ny * sy, nx * sx
    yy = ((np.arange(ny) + 0.5) * sy)[:, None] + np.zeros((1, nx))
    xx = ((np.arange(nx) + 0.5) * sx)[None, :] + np.zeros((ny, 1))
    t_ring, t_ribbon, t_rim = rng.uniform(*thickness_mm, size=3)
    u = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731

    ring_r = u(0.19, 0.24) * min(fov_y, fov_x)  # outer radius
    ring_c = np.array([u(0.3, 0.34) * fov_y, u(0.3, 0.34) * fov_x])
    organ_c = np.array([u(0.24, 0.3) * fov_y, u(0.76, 0.8) * fov_x])
    organ_r = np.array([u(0.09, 0.12) * fov_y, u(0.08, 0.11) * fov_x])
    rim_c = np.array([u(0.58, 0.62) * fov_y, u(0.76, 0.8) * fov_x])
    rim_r = u(0.06, 0.08) * min(fov_y, fov_x)
    xs = np.arange(0.12 * fov_x, 0.88 * fov_x, 0.02)  # 0.02 mm steps: the distance is exact to < 0.001 mm
    amp, period, phase = u(0.04, 0.07) * fov_y, u(0.25, 0.4) * fov_x, u(0, 2 * np.pi)
    ribbon_line = np.stack([u(0.84, 0.87) * fov_y + amp * np.sin(2 * np.pi * xs / period + phase), xs], axis=1)
    ribbon_d = _distance_to_curve(yy, xx, ribbon_line)

    img = np.full(shape, _TISSUE, dtype=np.float32)
    instances = np.zeros(shape, dtype=np.uint16)
    for z in range(nz):
        # The ring tapers a little along z (as a ventricle does); the lesion is a spherical shell.
        dz = (z + 0.5 - nz / 2) * sz
        outer = ring_r * (1 - 0.08 * (z / max(nz - 1, 1)))
        r = np.hypot(yy - ring_c[0], xx - ring_c[1])
        img[z][r < outer - t_ring] = _BLOOD
        ring = (r <= outer) & (r > outer - t_ring)
        ribbon = ribbon_d <= t_ribbon / 2
        organ = ((yy - organ_c[0]) / organ_r[0]) ** 2 + ((xx - organ_c[1]) / organ_r[1]) ** 2 <= 1
        rr = np.hypot(yy - rim_c[0], xx - rim_c[1])
        rim_out = np.sqrt(max(rim_r ** 2 - dz ** 2, 0.0))
        rim_in = np.sqrt(max((rim_r - t_rim) ** 2 - dz ** 2, 0.0))
        lesion = rr <= rim_out
        rim = lesion & (rr > rim_in)
        img[z][lesion] = _CORE
        for mask, value, inst in ((ring, _WALL, 1), (ribbon, _RIBBON, 2), (rim, _RIM, 3), (organ, _ORGAN, 4)):
            img[z][mask] = value
            instances[z][mask] = inst
    img = ndimage.gaussian_filter(img, sigma=(0, 0.4, 0.4)) + rng.normal(0, noise, size=shape).astype(np.float32)
    affine = affine_from_geometry((sx, sy, sz), origin=(-fov_x / 2 + sx / 2, -fov_y / 2 + sy / 2, 0.0))
    meta = {"description": f"synthetic wall phantom seed {seed}",
            "wall_thickness_mm": {"ring": float(t_ring), "ribbon": float(t_ribbon), "rim": float(t_rim)}}
    volume = Volume(img.astype(np.float32), affine, modality="MR", metadata=meta)
    classes = {i: i for i in range(1, 5) if (instances == i).any()}
    return Phantom(volume, instances, classes, WALL_LABELS)
