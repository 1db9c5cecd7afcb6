"""CT-like phantoms in Hounsfield units: body, spine, liver, two kidneys and liver/kidney tumours of 5-40 mm."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medmrcnn.labels import LabelMap
from medmrcnn.volume import Volume, affine_from_geometry

CT_LABELS = LabelMap.from_names(["liver", "kidney", "tumour"])


@dataclass
class Phantom:
    """A synthetic image with exact instance ground truth.

    Attributes:
        volume: the image (CT in HU, microscopy in counts) on the data contract.
        gt_instances: uint16 (z, y, x), 0 = background, 1..N = instance ids (later objects overwrite earlier ones).
        gt_classes: instance id -> class id of `labels`.
        labels: the class names.
    """

    volume: Volume
    gt_instances: np.ndarray
    gt_classes: dict[int, int]
    labels: LabelMap

    def class_map(self) -> np.ndarray:
        """uint8 (z, y, x) semantic label map derived from the instances."""
        lut = np.zeros(max(self.gt_classes, default=0) + 1, dtype=np.uint8)
        for inst, cls in self.gt_classes.items():
            lut[inst] = cls
        return lut[self.gt_instances]


def _ellipsoid(grid: tuple[np.ndarray, ...], centre_mm: np.ndarray, radii_mm: np.ndarray) -> np.ndarray:
    z, y, x = grid
    return ((z - centre_mm[0]) / radii_mm[0]) ** 2 + ((y - centre_mm[1]) / radii_mm[1]) ** 2 + (
        (x - centre_mm[2]) / radii_mm[2]
    ) ** 2 <= 1.0


def _lobulated(grid: tuple[np.ndarray, ...], centre: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Union of a sphere and a few smaller offset spheres: a lobulated lesion."""
    mask = _ellipsoid(grid, centre, np.full(3, radius))
    for _ in range(int(rng.integers(0, 3))):
        off = rng.normal(size=3)
        off *= radius * 0.5 / np.linalg.norm(off)
        mask |= _ellipsoid(grid, centre + off, np.full(3, radius * rng.uniform(0.5, 0.75)))
    return mask


def make_ct_phantom(
    shape: tuple[int, int, int] = (64, 256, 256),
    spacing: tuple[float, float, float] = (2.5, 1.4, 1.4),
    n_tumours: int = 4,
    tumour_diameter_mm: tuple[float, float] = (10.0, 40.0),
    noise_hu: float = 12.0,
    seed: int = 0,
) -> Phantom:
    """Abdominal CT-like phantom in HU with exact instance truth.

    Args:
        shape: (z, y, x) voxels.
        spacing: (z, y, x) voxel size in mm (e.g. 2.5 mm slices, 0.7 mm pixels for a 512 matrix).
        n_tumours: tumours placed in the liver (the last one in a kidney when n_tumours >= 3).
        tumour_diameter_mm: range of tumour diameters.
        noise_hu: standard deviation of the Gaussian noise.
        seed: random seed; the same seed gives the same phantom.
    Returns:
        Phantom with classes liver (1), kidney (2), tumour (3); organs exclude the tumours inside them.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sz, sy, sx = spacing
    ext = np.array([nz * sz, ny * sy, nx * sx])
    zz, yy, xx = np.meshgrid(
        (np.arange(nz) + 0.5) * sz, (np.arange(ny) + 0.5) * sy, (np.arange(nx) + 0.5) * sx,
        indexing="ij", sparse=True,
    )
    grid = (zz, yy, xx)
    c = ext / 2
    jitter = lambda s: rng.uniform(1 - s, 1 + s)  # noqa: E731

    img = np.full(shape, -1000.0, dtype=np.float32)
    body_r = np.array([ext[0] * 4, ext[1] * 0.36 * jitter(0.05), ext[2] * 0.45 * jitter(0.05)])
    body = _ellipsoid(grid, c, body_r)
    img[body] = -90.0  # fat
    muscle = _ellipsoid(grid, c, body_r * np.array([1, 0.9, 0.92]))
    img[muscle] = 45.0
    spine_c = c + np.array([0, body_r[1] * 0.6, 0])
    img[_ellipsoid(grid, spine_c, np.array([ext[0] * 4, 14, 16]))] = 450.0

    instances = np.zeros(shape, dtype=np.uint16)
    classes: dict[int, int] = {}
    # Patient right is low x (LPS): the liver sits at low x, anterior (low y).
    liver_c = c + np.array([-ext[0] * 0.12, -body_r[1] * 0.15, -body_r[2] * 0.35]) * jitter(0.05)
    liver_r = np.array([ext[0] * 0.32, body_r[1] * 0.55, body_r[2] * 0.45]) * jitter(0.08)
    liver = _ellipsoid(grid, liver_c, liver_r) | _ellipsoid(
        grid, liver_c + np.array([ext[0] * 0.05, liver_r[1] * 0.3, liver_r[2] * 0.5]), liver_r * 0.6
    )
    liver &= muscle
    img[liver] = 60.0
    instances[liver] = 1
    classes[1] = CT_LABELS.id_of("liver")
    kidney_masks = []
    for k, side in enumerate((-1, 1)):
        kc = c + np.array([ext[0] * 0.18, body_r[1] * 0.35, side * body_r[2] * 0.45]) * jitter(0.04)
        kr = np.array([min(ext[0] * 0.2, 55.0), 28.0, 22.0]) * jitter(0.1)
        kid = _ellipsoid(grid, kc, kr) & ~liver
        img[kid] = 160.0
        instances[kid] = 2 + k
        classes[2 + k] = CT_LABELS.id_of("kidney")
        kidney_masks.append((kc, kr))

    next_id = 4
    placed: list[tuple[np.ndarray, float]] = []
    for t in range(n_tumours):
        d = rng.uniform(*tumour_diameter_mm)
        in_kidney = n_tumours >= 3 and t == n_tumours - 1
        organ_c, organ_r = kidney_masks[0] if in_kidney else (liver_c, liver_r)
        for _ in range(200):
            u = rng.uniform(-1, 1, size=3)
            if np.linalg.norm(u) > 1:
                continue
            centre = organ_c + u * np.maximum(organ_r - d / 2 - 4, 1)
            # Keep tumours apart so each is one instance, and away from the volume's z ends.
            if any(np.linalg.norm(centre - p) < (d + q) / 2 + 3 for p, q in placed):
                continue
            if centre[0] - d / 2 < sz * 2 or centre[0] + d / 2 > ext[0] - sz * 2:
                continue
            break
        mask = _lobulated(grid, centre, d / 2, rng) & (instances > 0)
        if mask.sum() < 8:
            continue
        img[mask] = 110.0 if in_kidney else rng.uniform(10, 30)
        instances[mask] = next_id
        classes[next_id] = CT_LABELS.id_of("tumour")
        placed.append((centre, d))
        next_id += 1

    img = ndimage.gaussian_filter(img, sigma=(0.3, 0.7, 0.7))
    img += rng.normal(0, noise_hu, size=shape).astype(np.float32)
    hu = np.clip(np.round(img), -1024, 3071).astype(np.int16)
    affine = affine_from_geometry((sx, sy, sz), origin=(-ext[2] / 2 + sx / 2, -ext[1] / 2 + sy / 2, -ext[0]))
    volume = Volume(hu, affine, modality="CT", metadata={"description": f"synthetic CT phantom seed {seed}"})
    return Phantom(volume, instances, classes, CT_LABELS)

