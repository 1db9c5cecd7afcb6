"""`medmrcnn calibrate`: choose NMS, score and mask thresholds on validation data and store them in the checkpoint."""

from __future__ import annotations

import argparse

NAME = "calibrate"
HELP = "sweep NMS / score / mask thresholds on annotated validation data; write them into a checkpoint"


def _grid(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds must lie in (0, 1], got {text!r}")
    return values


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `calibrate`."""
    from medmrcnn.training.calibration import MASK_GRID, NMS_GRID, SCORE_GRID

    p.add_argument("--weights", required=True, help="medmrcnn checkpoint (.safetensors)")
    p.add_argument("--data", required=True,
                   help="validation data: datalist JSON, COCO JSON, or training config YAML (its validation split)")
    p.add_argument("--section", help="datalist section (default: validation, else testing, else training)")
    p.add_argument("--label-kind", choices=("semantic", "instance"), default="instance",
                   help="label maps hold instance ids (default; cell masks) or classes")
    p.add_argument("-o", "--output", help="calibrated checkpoint (default: <weights stem>.calibrated.safetensors)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--scores", type=_grid, default=SCORE_GRID, metavar="LIST", help="score thresholds to try")
    p.add_argument("--masks", type=_grid, default=MASK_GRID, metavar="LIST", help="mask thresholds to try")
    p.add_argument("--nms", type=_grid, default=NMS_GRID, metavar="LIST", help="box NMS IoU thresholds to try")


def run(args: argparse.Namespace) -> int:
    """Calibrate, print the choice and write the checkpoint."""
    from pathlib import Path

    from medmrcnn.modeling import read_checkpoint
    from medmrcnn.training import DataConfig
    from medmrcnn.training.calibration import calibrate_thresholds, write_calibrated_checkpoint
    from medmrcnn.training.evaluation import load_eval_items

    weights = Path(args.weights)
    output = Path(args.output) if args.output else weights.with_name(weights.stem + ".calibrated.safetensors")
    model_cfg = read_checkpoint(weights).config
    section = args.section
    if section is None and Path(args.data).suffix.lower() == ".json":
        from medmrcnn.training.datalist import read_datalist

        raw = read_datalist(args.data)
        section = next((k for k in ("validation", "testing", "training") if raw.get(k)), None)
    items = load_eval_items(args.data, model_cfg, section,
                            DataConfig(source="datalist", label_kind=args.label_kind))
    cal = calibrate_thresholds(weights, items, device=args.device, score_grid=args.scores, mask_grid=args.masks,
                               nms_grid=args.nms)
    write_calibrated_checkpoint(weights, cal, output, data=str(args.data))
    print(f"{len(items)} items, {len(cal['table'])} threshold combinations")
    print(f"best: NMS {cal['nms']:.2f}  score {cal['score']:.2f}  mask {cal['mask']:.2f}  "
          f"DSB2018 score {cal['dsb_score']:.3f}  accuracy@0.5 {cal['accuracy_50']:.3f}")
    for name, t in cal["per_class"].items():
        print(f"  {name:<14} score {t['score']:.2f}  mask {t['mask']:.2f}  DSB2018 score {t['dsb_score']:.3f}")
    print(f"calibrated checkpoint written to {output}")
    return 0
