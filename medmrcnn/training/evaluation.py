"""`evaluate(checkpoint, data)`: slice COCO AP, volumetric Dice per class and lesion-wise detection after 3D linking.

Slice metrics are computed on the network's grid (what it was trained on); volumetric and lesion-wise metrics
run the full `medmrcnn.inference.SliceWisePredictor` (resampling back to the original grid, 3D linking) and
compare with the ground truth in the original geometry.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.fileio import atomic_write_text
from medmrcnn.labels import LabelMap
from medmrcnn.modeling import load_model
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.runtime import resolve_device
from medmrcnn.training.config import DataConfig, TrainConfig
from medmrcnn.training.datacheck import validate_item
from medmrcnn.training.items import AnnotatedVolume
from medmrcnn.training.metrics import CellMatchAccumulator, DiceAccumulator, lesion_summary, match_instances
from medmrcnn.training.preprocess import prepare_volume
from medmrcnn.training.validation import validate

log = logging.getLogger(__name__)


def load_eval_items(data: str | Path, model_cfg: ModelConfig, key: str | None = None,
                    data_cfg: DataConfig | None = None) -> list[AnnotatedVolume]:
    """Items to evaluate: a datalist JSON (section `key`, default testing > validation > training), a COCO JSON,
    or a training config YAML (its validation split, e.g. held-out phantoms)."""
    from medmrcnn.training.datalist import load_datalist_items, read_datalist

    path = Path(data)
    labels = LabelMap.from_names(model_cfg.labels)
    if path.suffix.lower() in (".yaml", ".yml"):
        from medmrcnn.training.config import load_train_config
        from medmrcnn.training.sources import load_items

        cfg = load_train_config(path)
        return load_items(TrainConfig.from_dict({**cfg.to_dict(), "model": model_cfg.to_dict()}))[1]
    raw = read_datalist(path)
    if "images" in raw and "annotations" in raw:
        from medmrcnn.training.coco import load_coco_items

        return load_coco_items(path, labels, (data_cfg.image_root if data_cfg else None))
    if key is None:
        key = next((k for k in ("testing", "validation", "training") if raw.get(k)), "validation")
    return load_datalist_items(path, key, labels, data_cfg or DataConfig())


def volume_metrics(items: list[AnnotatedVolume], checkpoint: str | Path, device: str,
                   score_threshold: float | None = None) -> dict[str, Any]:
    """Dice per class over all voxels and lesion-wise metrics per class, via the full slice-wise predictor."""
    from medmrcnn.inference import PredictorConfig, SliceWisePredictor

    cfg = PredictorConfig() if score_threshold is None else PredictorConfig(score_threshold=score_threshold)
    predictor = SliceWisePredictor.from_checkpoint(checkpoint, cfg, device=device)
    names = predictor.model_cfg.labels
    dice = DiceAccumulator(len(names))
    objects = CellMatchAccumulator()
    rows_per_volume, per_item = [], []
    for item in items:
        t0 = time.perf_counter()
        result = predictor.predict(item.volume)
        seconds = time.perf_counter() - t0
        gt_class = item.class_map()
        dice.add(result.class_map, gt_class)
        one = DiceAccumulator(len(names))
        one.add(result.class_map, gt_class)
        gt_lesions, gt_classes = item.lesions()
        objects.add(gt_lesions, result.instance_map)
        rows = match_instances(gt_lesions, gt_classes, result.instance_map, {r.id: r.class_id for r in result.instances})
        rows_per_volume.append(rows)
        per_item.append({
            "name": item.name, "seconds": round(seconds, 2),
            "dice": {names[c - 1]: round(v, 4) for c, v in one.dice().items()},
            "instances": [{**r, "class": names[r["class_id"] - 1]} for r in rows],
        })
    lesions = lesion_summary(rows_per_volume, len(names))
    return {
        "dice": {names[c - 1]: v for c, v in dice.dice().items()},
        "lesions": {names[c - 1]: v for c, v in lesions.items()},
        "objects": {"by_iou": {f"{t:.2f}": v for t, v in objects.scores().items()},
                    "dsb_score": objects.dsb_score()},
        "items": per_item,
    }


def evaluate(
    checkpoint: str | Path, data: str | Path, *, key: str | None = None, device: str = "auto",
    data_cfg: DataConfig | None = None, output: str | Path | None = None, volumetric: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on annotated data; returns (and with `output`, writes as JSON) the metrics.

    Returns {"checkpoint", "data", "n_items", "slices": {bbox_/mask_AP, AP50, AP75, dice_<class>},
    "volumes": {"dice": {class: Dice}, "lesions": {class: sensitivity, fp_per_volume, ...},
    "objects": {"by_iou": {"0.50": {precision, recall, accuracy, f1, mean_matched_iou, ...}, ...}, "dsb_score"},
    "items": [...]}}; "objects" are the cell-field scores (class-agnostic, see metrics.CellMatchAccumulator).
    """
    dev = resolve_device(device)
    model, model_cfg = load_model(checkpoint, device=dev)
    items = load_eval_items(data, model_cfg, key, data_cfg)
    for item in items:
        validate_item(item, len(model_cfg.labels))
    prepared = [prepare_volume(x, model_cfg) for x in items]
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint), "data": str(data), "n_items": len(items),
        "slices": validate(model, prepared, model_cfg, dev),
    }
    del prepared
    if volumetric:
        report["volumes"] = volume_metrics(items, checkpoint, str(dev))
    if output is not None:
        atomic_write_text(output, json.dumps(report, indent=2, default=_json_default))
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_report(report: dict[str, Any]) -> str:
    """The metrics as a table a person reads (what `medmrcnn evaluate` prints)."""
    s = report["slices"]
    lines = [f"{report['n_items']} items from {report['data']}",
             "slice metrics      AP     AP50   AP75",
             f"  boxes         {s['bbox_AP']:6.3f} {s['bbox_AP50']:6.3f} {s['bbox_AP75']:6.3f}",
             f"  masks         {s['mask_AP']:6.3f} {s['mask_AP50']:6.3f} {s['mask_AP75']:6.3f}"]
    vol = report.get("volumes")
    if vol:
        lines.append("class            Dice   lesions  sensitivity  FP/volume  Dice(detected)")
        nan = float("nan")
        for name in list(vol["dice"]) + [n for n in vol["lesions"] if n not in vol["dice"]]:
            les = vol["lesions"].get(name, {})
            lines.append(
                f"  {name:<14} {vol['dice'].get(name, nan):6.3f} {les.get('n_gt', 0):>8}"
                f" {les.get('sensitivity', nan):>12.3f} {les.get('fp_per_volume', nan):>10.2f}"
                f" {les.get('mean_dice_detected', nan):>14.3f}"
            )
        objects = vol.get("objects")
        if objects:
            lines.append("objects at IoU   accuracy  precision  recall     F1  mean IoU (matched)")
            for t in ("0.50", "0.70", "0.90"):
                o = objects["by_iou"][t]
                lines.append(f"  {t:<14} {o['accuracy']:8.3f} {o['precision']:10.3f} {o['recall']:7.3f}"
                             f" {o['f1']:6.3f} {o['mean_matched_iou']:9.3f}")
            lines.append(f"  DSB2018 score (accuracy averaged over IoU 0.50..0.95): {objects['dsb_score']:.3f}")
    return "\n".join(lines)
