"""Pick the data source a TrainConfig names and return its training and validation items."""

from __future__ import annotations

from medmrcnn.labels import LabelMap
from medmrcnn.training.config import TrainConfig
from medmrcnn.training.items import AnnotatedVolume


def load_items(cfg: TrainConfig) -> tuple[list[AnnotatedVolume], list[AnnotatedVolume]]:
    """(training items, validation items) for cfg.data.source: phantom, datalist or coco."""
    labels = LabelMap.from_names(cfg.model.labels)
    d = cfg.data
    if d.source == "phantom":
        from medmrcnn.training.phantoms import phantom_items

        return phantom_items(d.phantom, labels, "train"), phantom_items(d.phantom, labels, "val")
    if d.source == "coco":
        from medmrcnn.training.coco import load_coco_items

        train = load_coco_items(d.coco_train, labels, d.image_root)
        val = load_coco_items(d.coco_val, labels, d.image_root) if d.coco_val else []
        return _split(train, d.val_fraction, cfg.seed) if not val else (train, val)
    from medmrcnn.training.datalist import load_datalist_items

    train = load_datalist_items(d.datalist, d.train_key, labels, d)
    val = load_datalist_items(d.datalist, d.val_key, labels, d, required=False)
    return _split(train, d.val_fraction, cfg.seed) if not val else (train, val)


def _split(items: list[AnnotatedVolume], fraction: float, seed: int) -> tuple[list[AnnotatedVolume], list[AnnotatedVolume]]:
    """Hold out round(fraction * n) items (at least one when fraction > 0 and n > 1), chosen by seed."""
    import numpy as np

    n_val = min(max(int(round(fraction * len(items))), 1 if fraction > 0 and len(items) > 1 else 0), len(items) - 1)
    order = np.random.default_rng([seed, 31]).permutation(len(items))
    val_idx = set(order[:n_val].tolist())
    return [x for i, x in enumerate(items) if i not in val_idx], [x for i, x in enumerate(items) if i in val_idx]
