"""Benchmark 2: training throughput (images/s) and peak memory, medmrcnn's loop vs a plain torchvision loop.

All variants see the same batches: the generated phantoms, slices, crops and augmentations of medmrcnn's own
dataset for epoch 0 (`SliceDataset.epoch_samples`), in the same order. The first step is warm-up; images/s is
measured from the end of step 1 to the end of the last step. Variants:
    medmrcnn              `medmrcnn.training.train` (its step times read from the TensorBoard events it writes)
    torchvision_default   a bare AdamW loop behind torchvision's default transform (crops resized to 800 px)
    torchvision_native    the same bare loop at the data's own pixel size
The model is the demo architecture on the CPU (an R50-FPN step at 800 px takes minutes there) and the R50-FPN on
CUDA, where medmrcnn trains with bf16 autocast and the plain loop in float32 (torchvision's default).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from medmrcnn.bench.baselines import torchvision_training_loop, torchvision_transform
from medmrcnn.bench.compare import interleaved, median_ratio, memory_ratio, speedup, summarise
from medmrcnn.bench.fixtures import demo_config_file, demo_weights, r50_config
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings
from medmrcnn.modeling import build_model
from medmrcnn.training import TrainConfig, load_train_config, train
from medmrcnn.training.dataset import EpochView, SliceDataset, collate
from medmrcnn.training.preprocess import prepare_volume
from medmrcnn.training.sources import load_items

OURS = "medmrcnn"
BASELINES = ("torchvision_default", "torchvision_native")


def bench_train_config(settings: BenchSettings, output: str) -> TrainConfig:
    """The demo recipe (configs/demo.yaml when present) on a few small phantoms, for settings.train_steps steps."""
    base = load_train_config(demo_config_file()) if demo_config_file().is_file() else TrainConfig()
    model = r50_config() if settings.cuda else demo_weights(settings.demo_weights)[1]
    phantom = dataclasses.replace(base.data.phantom, kind="ct", n_train=settings.train_volumes, n_val=0,
                                  slices=(settings.train_volume_slices, settings.train_volume_slices))
    return dataclasses.replace(
        base, model=model, data=dataclasses.replace(base.data, source="phantom", phantom=phantom), init=None,
        epochs=1, steps_per_epoch=settings.train_steps, batch_size=settings.train_batch, max_steps=None,
        device=settings.device, amp="bf16" if settings.cuda else "none", threads=settings.threads, num_workers=0,
        output=output, log_every=1, checkpoint_every=0, seed=0,
    )


def _step_times_from_events(tb_dir: Path) -> list[float]:
    """Wall-clock times of the per-step `train/loss` scalars medmrcnn's loop wrote (log_every=1), in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.wall_time for e in sorted(events.Scalars("train/loss"), key=lambda e: e.step)]


def run_medmrcnn(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: medmrcnn.training.train for the configured steps, into a fresh run folder."""
    cfg = TrainConfig.from_dict(spec["config"])
    output = tempfile.mkdtemp(prefix="run-", dir=cfg.output)  # every repeat its own TensorBoard events
    with probe.section():
        result = train(cfg, output=output, progress=False)
    times = _step_times_from_events(Path(output) / "tb")
    if len(times) != cfg.steps_per_epoch or result.steps != cfg.steps_per_epoch:
        raise RuntimeError(f"expected {cfg.steps_per_epoch} steps, the loop logged {len(times)}")
    return {"step_seconds": times[-1] - times[0], "steps": len(times)}


def run_torchvision(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: the bare loop over exactly the batches medmrcnn's loop sees."""
    cfg = TrainConfig.from_dict(spec["config"])
    times: list[float] = []

    def on_step() -> None:
        times.append(time.perf_counter())

    # Data and model are built inside the section, as train() does inside its own: the memory peaks compare alike.
    with probe.section():
        torch.manual_seed(cfg.seed)
        train_items, _ = load_items(cfg)
        dataset = SliceDataset([prepare_volume(x, cfg.model) for x in train_items], cfg.model, cfg.data,
                               cfg.augment)
        samples = dataset.epoch_samples(0, cfg.seed, cfg.steps_per_epoch * cfg.batch_size)
        loader = DataLoader(EpochView(dataset, samples), batch_size=cfg.batch_size, collate_fn=collate,
                            shuffle=False)
        model = build_model(cfg.model)
        if not spec["native"]:
            model.transform = torchvision_transform(cfg.model)
        model.to(cfg.device)
        torchvision_training_loop(model, loader, cfg.device, cfg.optim.lr, cfg.optim.weight_decay, on_step)
    return {"step_seconds": times[-1] - times[0], "steps": len(times)}


def bench_training(runner: IsolatedRunner, settings: BenchSettings, workdir: str) -> dict[str, Any]:
    """Run the three training variants; images/s, peaks and speed-ups."""
    variants = {}
    for name, task in ((OURS, run_medmrcnn), *((b, run_torchvision) for b in BASELINES)):
        folder = Path(workdir) / f"train_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        cfg = bench_train_config(settings, str(folder))
        variants[name] = (task, {"config": cfg.to_dict(), "native": name == "torchvision_native"})
    cfg = bench_train_config(settings, "")
    samples = interleaved(runner, variants, settings.repeats)
    images = cfg.batch_size * (cfg.steps_per_epoch - 1)
    figures = {name: summarise(s, images, "images", seconds_key="step_seconds") for name, s in samples.items()}
    ratios = {name: {"speedup": speedup(samples[name], samples[OURS], seconds_key="step_seconds"),
                     "median_ratio": median_ratio(samples[name], samples[OURS], "step_seconds"),
                     "host_peak_increase": memory_ratio(figures[name], figures[OURS], "host_peak_increase_mb"),
                     "cuda_peak": memory_ratio(figures[name], figures[OURS], "cuda_peak_mb")}
              for name in BASELINES}
    m = cfg.model
    pixels = f"{m.pixel_spacing_mm} mm pixels" if m.pixel_spacing_mm else "native pixels"
    return {
        "model": f"{m.backbone} stages {list(m.returned_layers)}, FPN {m.fpn_channels}",
        "steps": cfg.steps_per_epoch, "timed_images": images, "batch_size": cfg.batch_size,
        "crop_size": cfg.augment.crop_size, "amp": cfg.amp, "variants": figures, "ratios": ratios,
        "data": f"{cfg.data.phantom.n_train} CT phantoms x {cfg.data.phantom.slices[0]} slices at {pixels}",
    }

