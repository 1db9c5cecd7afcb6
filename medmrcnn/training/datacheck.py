"""Data check before training: refuse broken items with one clear line, report the dataset, suggest anchors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from medmrcnn.errors import DataError
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.training.items import AnnotatedVolume
from medmrcnn.training.preprocess import PreparedVolume

SIZE_BINS_PX = (0, 4, 8, 16, 32, 64, 128, 256, 512)
SIZE_BINS_MM = (0, 2, 5, 10, 20, 50, 100, 200, 400)


def validate_item(item: AnnotatedVolume, num_classes: int) -> None:
    """Raise DataError naming the item if its labels cannot be trained on (shape, ids, class ids)."""
    if item.gt_instances.shape != item.volume.shape:
        raise DataError(f"{item.name}: label shape {item.gt_instances.shape} differs from image shape {item.volume.shape}")
    if not np.issubdtype(item.gt_instances.dtype, np.integer):
        raise DataError(f"{item.name}: label map must hold integers, found {item.gt_instances.dtype}")
    if item.gt_instances.min(initial=0) < 0:
        raise DataError(f"{item.name}: label map has negative values")
    bad_cls = sorted({c for c in item.gt_classes.values() if not 1 <= c <= num_classes})
    if bad_cls:
        raise DataError(f"{item.name}: class ids {bad_cls} are outside the label map 1..{num_classes}")
    present = np.flatnonzero(np.bincount(item.gt_instances.ravel().astype(np.int64)))
    unknown = sorted(int(i) for i in present if i and int(i) not in item.gt_classes)
    if unknown:
        more = "..." if len(unknown) > 8 else ""
        raise DataError(f"{item.name}: label values {unknown[:8]}{more} are not in the label map / class table")


@dataclass
class DataReport:
    """What the training data holds, measured on the network's pixel grid.

    Sizes are per object per slice: sqrt(box width * box height), in pixels of the prepared grid and in mm.
    """

    labels: tuple[str, ...]
    n_items: int = 0
    n_slices: int = 0
    n_empty_slices: int = 0
    objects_per_class: dict[str, int] = field(default_factory=dict)
    slices_per_class: dict[str, int] = field(default_factory=dict)
    size_hist_px: dict[str, int] = field(default_factory=dict)
    size_hist_mm: dict[str, int] = field(default_factory=dict)
    size_percentiles_px: dict[str, float] = field(default_factory=dict)
    anchor_sizes: list[list[int]] = field(default_factory=list)
    suggested_anchor_sizes: list[list[int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    def summary(self) -> str:
        """One line for the log."""
        per = ", ".join(f"{k} {v}" for k, v in self.objects_per_class.items())
        return f"{self.n_items} items, {self.n_slices} slices ({self.n_empty_slices} empty), objects: {per}"

    def format_table(self) -> str:
        """Multi-line human-readable report (what `medmrcnn train --check` prints)."""
        lines = [self.summary(), "class          objects  slices"]
        for c in self.labels:
            lines.append(f"{c:<14} {self.objects_per_class.get(c, 0):>7}  {self.slices_per_class.get(c, 0):>6}")
        lines.append("object size (px): " + "  ".join(f"{k}:{v}" for k, v in self.size_hist_px.items()))
        lines.append("object size (mm): " + "  ".join(f"{k}:{v}" for k, v in self.size_hist_mm.items()))
        lines.append("size percentiles (px): " + "  ".join(f"{k}={v:.1f}" for k, v in self.size_percentiles_px.items()))
        lines.append(f"anchor sizes: {self.anchor_sizes}  suggested: {self.suggested_anchor_sizes}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _hist(values: np.ndarray, edges: tuple[int, ...], unit: str) -> dict[str, int]:
    counts, _ = np.histogram(values, bins=list(edges) + [np.inf])
    names = [f"{a}-{b}{unit}" for a, b in zip(edges[:-1], edges[1:])] + [f">{edges[-1]}{unit}"]
    return {n: int(c) for n, c in zip(names, counts)}


def suggest_anchor_sizes(sizes_px: np.ndarray, num_levels: int, per_level: int) -> list[list[int]]:
    """Anchor sizes spread geometrically over the 1st..99th percentile of object sizes, `per_level` per FPN level."""
    lo, hi = np.percentile(sizes_px, [1, 99]) if len(sizes_px) else (8.0, 256.0)
    lo, hi = max(lo, 4.0), max(hi, lo * 2)
    sizes = np.geomspace(lo, hi, num_levels * per_level).round().astype(int)
    sizes = np.maximum.accumulate(np.maximum(sizes, 2))
    return [sizes[i * per_level:(i + 1) * per_level].tolist() for i in range(num_levels)]


def build_report(volumes: list[PreparedVolume], cfg: ModelConfig, min_pixels: int = 1) -> DataReport:
    """Count objects and slices per class, histogram object sizes (px and mm), suggest anchor sizes."""
    report = DataReport(labels=tuple(cfg.labels), n_items=len(volumes))
    objects = np.zeros(len(cfg.labels) + 1, dtype=np.int64)
    slices = np.zeros(len(cfg.labels) + 1, dtype=np.int64)
    sizes_px: list[float] = []
    sizes_mm: list[float] = []
    for pv in volumes:
        sy, sx = pv.pixel_spacing_mm
        for z in range(pv.instances.shape[0]):
            report.n_slices += 1
            sl = pv.instances[z]
            counts = np.bincount(sl.ravel().astype(np.int64))
            seen = set()
            for i, box in enumerate(ndimage.find_objects(sl), start=1):
                if box is None or counts[i] < min_pixels or i not in pv.classes:
                    continue
                h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
                c = pv.classes[i]
                objects[c] += 1
                seen.add(c)
                sizes_px.append(float(np.sqrt(h * w)))
                sizes_mm.append(float(np.sqrt(h * sy * w * sx)))
            for c in seen:
                slices[c] += 1
            report.n_empty_slices += not seen
    names = list(cfg.labels)
    report.objects_per_class = {n: int(objects[i + 1]) for i, n in enumerate(names)}
    report.slices_per_class = {n: int(slices[i + 1]) for i, n in enumerate(names)}
    px, mm = np.asarray(sizes_px), np.asarray(sizes_mm)
    report.size_hist_px = _hist(px, SIZE_BINS_PX, "px")
    report.size_hist_mm = _hist(mm, SIZE_BINS_MM, "mm")
    if len(px):
        report.size_percentiles_px = {f"p{q}": float(np.percentile(px, q)) for q in (1, 5, 50, 95, 99)}
    anchors = cfg.resolved_anchor_sizes
    report.anchor_sizes = [list(a) for a in anchors]
    report.suggested_anchor_sizes = suggest_anchor_sizes(px, cfg.num_feature_levels, len(anchors[0]))
    for n in names:
        if report.objects_per_class[n] == 0:
            report.warnings.append(f"class {n!r} has no objects: the model cannot learn it")
    if len(px):
        smallest, largest = min(min(a) for a in anchors), max(max(a) for a in anchors)
        small = float(np.mean(px < smallest / 2))
        large = float(np.mean(px > largest * 2))
        if small > 0.05:
            report.warnings.append(f"{small:.0%} of objects are smaller than half the smallest anchor ({smallest} px)")
        if large > 0.05:
            report.warnings.append(f"{large:.0%} of objects are larger than twice the largest anchor ({largest} px)")
    return report


def check_config(cfg) -> DataReport:  # cfg: TrainConfig (imported lazily: config -> datacheck -> sources cycle)
    """Load every item the config names, refuse broken ones (DataError), and report the prepared dataset."""
    from medmrcnn.training.preprocess import prepare_volume
    from medmrcnn.training.sources import load_items

    train, val = load_items(cfg)
    for item in train + val:
        validate_item(item, len(cfg.model.labels))
    return build_report([prepare_volume(x, cfg.model) for x in train + val], cfg.model, cfg.data.min_pixels)
