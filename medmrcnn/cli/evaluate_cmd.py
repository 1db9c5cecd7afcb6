"""`medmrcnn evaluate`: COCO AP on slices, Dice per class and lesion-wise detection of a checkpoint on annotated data."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "evaluate a checkpoint on a datalist / COCO JSON / training config's validation split; prints a table, writes JSON"


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `evaluate`."""
    p.add_argument("--weights", required=True, help="medmrcnn checkpoint (.safetensors)")
    p.add_argument("--data", required=True, help="datalist JSON, COCO JSON, or training config YAML (its validation split)")
    p.add_argument("--section", help="datalist section (default: testing, else validation, else training)")
    p.add_argument("--label-kind", choices=("semantic", "instance"), default="semantic",
                   help="label maps hold classes (default) or instance ids with a per-item 'classes' table")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--slices-only", action="store_true", help="skip the volumetric (predictor + 3D linking) metrics")
    p.add_argument("-o", "--output", help="write the metrics JSON here (default: <weights stem>.eval.json)")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and write the JSON."""
    from pathlib import Path

    from medmrcnn.training import DataConfig, evaluate, format_report

    output = Path(args.output) if args.output else Path(args.weights).with_suffix(".eval.json")
    report = evaluate(args.weights, args.data, key=args.section, device=args.device,
                      data_cfg=DataConfig(source="datalist", label_kind=args.label_kind), output=output,
                      volumetric=not args.slices_only)
    print(format_report(report))
    print(f"metrics written to {output}")
    return 0
