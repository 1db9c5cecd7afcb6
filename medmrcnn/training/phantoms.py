"""Generated training data: CT phantoms and microscopy images with varied size, spacing, noise and lesions."""

from __future__ import annotations

import numpy as np

from medmrcnn.errors import DataError
from medmrcnn.labels import LabelMap
from medmrcnn.synthetic import make_ct_phantom, make_microscopy_image
from medmrcnn.synthetic.ct import Phantom
from medmrcnn.training.config import PhantomConfig
from medmrcnn.training.items import AnnotatedVolume

VAL_SEED_OFFSET = 100_000


def _to_item(ph: Phantom, labels: LabelMap, name: str) -> AnnotatedVolume:
    """Re-map the phantom's class ids onto the model's labels by name (classes the model lacks are dropped)."""
    known = set(labels.names)
    if not known & set(ph.labels.names):
        raise DataError(f"phantom classes {list(ph.labels.names)} share no name with the model labels {list(labels.names)}")
    classes = {
        inst: labels.id_of(ph.labels.name_of(c)) for inst, c in ph.gt_classes.items() if ph.labels.name_of(c) in known
    }
    instances = ph.gt_instances
    if len(classes) < len(ph.gt_classes):
        lut = np.zeros(int(instances.max()) + 1, dtype=instances.dtype)
        for inst in classes:
            lut[inst] = inst
        instances = lut[instances]
    return AnnotatedVolume(ph.volume, instances, classes, name)


def ct_phantom(p: PhantomConfig, seed: int, labels: LabelMap) -> AnnotatedVolume:
    """One abdominal CT phantom whose geometry, noise and lesions are drawn from the ranges in `p`."""
    rng = np.random.default_rng([seed, 7])
    fov = rng.uniform(*p.field_of_view_mm)
    spacing = max(rng.uniform(*p.pixel_spacing_mm), fov / p.max_matrix)
    matrix = int(round(fov / spacing))
    # Non-square matrices appear in practice (cropped reconstructions); keep them close to square.
    shape = (int(rng.integers(p.slices[0], p.slices[1] + 1)), matrix, int(round(matrix * rng.uniform(0.9, 1.1))))
    ph = make_ct_phantom(
        shape=shape,
        spacing=(rng.uniform(*p.slice_spacing_mm), spacing, spacing),
        n_tumours=int(rng.integers(p.n_tumours[0], p.n_tumours[1] + 1)),
        tumour_diameter_mm=p.tumour_diameter_mm,
        noise_hu=rng.uniform(*p.noise_hu),
        seed=seed,
    )
    return _to_item(ph, labels, f"ct-phantom-{seed}")


def microscopy_phantom(p: PhantomConfig, seed: int, labels: LabelMap) -> AnnotatedVolume:
    """One microscopy image of nuclei with size and count drawn from the ranges in `p`."""
    rng = np.random.default_rng([seed, 11])
    side = int(rng.integers(p.image_size[0], p.image_size[1] + 1))
    ph = make_microscopy_image(
        shape=(side, side), n_nuclei=int(rng.integers(p.n_nuclei[0], p.n_nuclei[1] + 1)), seed=seed
    )
    return _to_item(ph, labels, f"microscopy-phantom-{seed}")


def phantom_items(p: PhantomConfig, labels: LabelMap, split: str) -> list[AnnotatedVolume]:
    """The generated training ("train") or validation ("val") items; the two splits never share a seed."""
    make = ct_phantom if p.kind == "ct" else microscopy_phantom
    if split == "train":
        seeds = range(p.seed, p.seed + p.n_train)
    else:
        seeds = range(p.seed + VAL_SEED_OFFSET, p.seed + VAL_SEED_OFFSET + p.n_val)
    return [make(p, s, labels) for s in seeds]
