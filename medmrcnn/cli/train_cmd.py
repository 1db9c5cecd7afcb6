"""`medmrcnn train`: fine-tune or train from scratch from a YAML config (also under torchrun for DDP)."""

from __future__ import annotations

import argparse
import json
import logging
import os

NAME = "train"
HELP = "train a model from a YAML config (checkpoints, metrics, TensorBoard in the output folder)"


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `train`."""
    p.add_argument("--config", required=True, help="training config YAML (see configs/ and docs/training.md)")
    p.add_argument("--output", help="run folder (default: the config's `output`)")
    p.add_argument("--resume", action="store_true", help="continue exactly from <output>/train_state.pt")
    p.add_argument("--check", action="store_true", help="only run the data check and print its report")
    p.add_argument("--device", help="auto, cpu or cuda[:N] (overrides the config)")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (resumable)")
    p.add_argument("--init", help="initial weights: medmrcnn .safetensors or local torchvision .pth")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--lr-find", type=int, nargs="?", const=100, metavar="STEPS",
                   help="only run a learning-rate range test (default 100 steps, lr 1e-5 to 0.1) in "
                        "<output>/lr_find and print the suggested optim.lr")


def run(args: argparse.Namespace) -> int:
    """Load the config, then train (or only check the data) and print where the results are."""
    from medmrcnn.training import load_train_config, train

    overrides = {k: v for k, v in {"device": args.device, "epochs": args.epochs, "max_steps": args.max_steps,
                                   "init": args.init}.items() if v is not None}
    cfg = load_train_config(args.config, overrides)
    if not args.debug and int(os.environ.get("RANK", "0")) == 0:
        logging.getLogger("medmrcnn").setLevel(logging.INFO)  # progress lines from one process only
    if args.check:
        from medmrcnn.training.datacheck import check_config

        print(check_config(cfg).format_table())
        return 0
    if args.lr_find:
        from pathlib import Path

        from medmrcnn.training.lrfind import lr_range_test

        curve = lr_range_test(cfg, Path(args.output or cfg.output) / "lr_find", steps=args.lr_find)
        print(json.dumps({k: curve[k] for k in ("suggested_lr", "min_loss_lr", "diverged_at_lr")}, indent=2))
        return 0
    result = train(cfg, resume=args.resume, output=args.output, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        last_val = next((h["val"] for h in reversed(result.metrics) if "val" in h), {})
        print(json.dumps({"output": str(result.output), "best": str(result.best) if result.best else None,
                          "last": str(result.last), "steps": result.steps, "val": last_val}, indent=2))
    return 0
