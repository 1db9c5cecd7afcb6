"""Learning-rate range test (Smith 2017): train briefly while the learning rate rises geometrically, and read the
loss curve to choose a learning rate for a short fine-tune.

The run is an ordinary `train()` with the "exponential" schedule and one log point per step, so it sees exactly the
data, augmentation and model of the real run; its folder keeps the curve (`lr_range.json`) and the TensorBoard events.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.fileio import atomic_write_text
from medmrcnn.training.config import TrainConfig
from medmrcnn.training.optim import lr_factor


def lr_range_test(cfg: TrainConfig, output: str | Path, steps: int = 100, lr_min: float = 1e-5,
                  lr_max: float = 0.1) -> dict[str, Any]:
    """Run the range test for `cfg` in `output`; returns {"lr": [...], "loss": [...], "smoothed": [...],
    "suggested_lr", "min_loss_lr", "diverged_at_lr"} and writes it to output/lr_range.json.

    The suggestion is a tenth of the learning rate at the smoothed loss minimum, the usual reading of the curve
    (the steepest useful rate, kept clear of where the loss turns up); the curve stops at the first loss above four
    times the minimum (divergence).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medmrcnn.training.engine import train

    run = replace(cfg, epochs=1, steps_per_epoch=steps, max_steps=None, patience=0, log_every=1,
                  eval_every=10**9, checkpoint_every=0,
                  optim=replace(cfg.optim, lr=lr_max, min_lr_ratio=lr_min / lr_max, warmup_steps=0,
                                schedule="exponential"))
    result = train(run, output=output, progress=False)
    events = EventAccumulator(str(Path(result.output) / "tb"))
    events.Reload()
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    # Step s (1-based) ran at the rate the schedule gave step s - 1.
    used = [run.optim.lr * lr_factor(s - 1, result.steps, run.optim) for s in sorted(loss)]
    curve = summarise_range_test(used, [loss[s] for s in sorted(loss)])
    atomic_write_text(Path(result.output) / "lr_range.json", json.dumps(curve, indent=2))
    return curve


def summarise_range_test(lrs: list[float], losses: list[float], beta: float = 0.9) -> dict[str, Any]:
    """Smooth the losses (bias-corrected exponential moving average), cut the curve at divergence and suggest a
    learning rate: a tenth of the one at the smoothed minimum."""
    smoothed, avg = [], 0.0
    for i, value in enumerate(losses):
        avg = beta * avg + (1 - beta) * value
        smoothed.append(avg / (1 - beta ** (i + 1)))
    best = float("inf")
    end, diverged = len(smoothed), None
    for i, value in enumerate(smoothed):
        best = min(best, value)
        if i > 5 and value > 4 * best:
            end, diverged = i, lrs[i]
            break
    k = int(np.argmin(smoothed[:end]))
    return {"lr": lrs, "loss": losses, "smoothed": smoothed, "min_loss_lr": lrs[k],
            "suggested_lr": lrs[k] / 10.0, "diverged_at_lr": diverged}
