"""`train(cfg)`: the optimisation loop. Reads like the run: data -> model -> optimiser -> epochs -> checkpoints.

Run folder (cfg.output): `last.safetensors` / `best.safetensors` (model + config, medmrcnn.modeling format),
`train_state.pt` (everything `--resume` needs), `metrics.json` (one entry per epoch), `data_report.json`,
`config.yaml` (the resolved TrainConfig) and `tb/` (TensorBoard events). Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from medmrcnn.errors import CheckpointError
from medmrcnn.fileio import atomic_write_text
from medmrcnn.modeling import build_model, load_torchvision_weights, read_checkpoint, save_checkpoint
from medmrcnn.modeling.checkpoint import check_compatible
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.training import distributed as D
from medmrcnn.training.config import TrainConfig
from medmrcnn.training.datacheck import build_report, validate_item
from medmrcnn.training.dataset import EpochView, SliceDataset, collate
from medmrcnn.training.optim import build_optimizer, build_scheduler
from medmrcnn.training.preprocess import prepare_volume
from medmrcnn.training.sources import load_items
from medmrcnn.training.state import capture_rng, load_state, restore_rng, save_state
from medmrcnn.training.validation import validate
from medmrcnn.transforms import training_intensity

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced: checkpoint paths (best is None when never validated), per-epoch metrics and whether
    early stopping (cfg.patience) ended it."""

    output: Path
    last: Path
    best: Path | None
    state: Path
    steps: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally request deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def initial_weights(model: nn.Module, cfg: TrainConfig) -> None:
    """Load cfg.init: a medmrcnn checkpoint (labels may differ: class heads re-initialised) or a torchvision file."""
    if not cfg.init:
        return
    path = Path(cfg.init)
    if path.suffix == ".safetensors":
        ckpt = read_checkpoint(path)
        differs = _arch_differences(ckpt.config, cfg.model)
        if differs:
            raise CheckpointError(f"{path}: cannot initialise from this checkpoint, architecture differs in {differs}")
        own = model.state_dict()
        fits = {k: v for k, v in ckpt.state_dict.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fits, strict=False)
        log.info("initialised %d/%d tensors from %s", len(fits), len(own), path)
    else:
        report = load_torchvision_weights(model, path)
        log.info("initialised %d tensors from torchvision file %s", len(report["loaded"]), path)


def _arch_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """Fields that change tensor shapes of the trunk (labels and anchors may differ when fine-tuning)."""
    keys = ("backbone", "in_channels", "returned_layers", "fpn_channels", "mask_head_channels", "box_representation_size")
    da, db = a.to_dict(), b.to_dict()
    return [k for k in keys if da[k] != db[k]]


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to(targets: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


class _Run:
    """Bookkeeping shared by the loop: where to write, what was measured, which process this is."""

    def __init__(self, cfg: TrainConfig, out: Path, info: D.DistInfo) -> None:
        self.cfg, self.out, self.info = cfg, out, info
        self.history: list[dict[str, Any]] = []
        self.writer = None
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(cfg: TrainConfig, resume: bool = False, output: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train the model cfg.model describes on cfg.data; under torchrun every process calls this (DDP).

    With `resume`, continue from `<output>/train_state.pt` exactly where it stopped (weights, optimiser,
    scheduler, scaler, epoch, batch, RNG). Returns the checkpoint paths and per-epoch metrics.
    """
    out = Path(output or cfg.output)
    info = D.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.amp != "none" and info.device.type != "cuda":
        log.warning("amp=%s needs CUDA; training in float32 on %s", cfg.amp, info.device)
    seed_everything(cfg.seed, cfg.deterministic)
    run = _Run(cfg, out, info)
    try:
        return _train(cfg, resume, run, progress)
    finally:
        run.close()
        D.teardown(info)


def _train(cfg: TrainConfig, resume: bool, run: _Run, progress: bool) -> TrainResult:
    info, out = run.info, run.out
    t0 = time.perf_counter()
    train_items, val_items = load_items(cfg)
    for item in train_items + val_items:
        validate_item(item, len(cfg.model.labels))
    # Checkpoints record the concrete preset ("auto" resolved once, here), so serving scales as training did.
    intensity = training_intensity(cfg.model.intensity, [x.volume.modality for x in train_items + val_items])
    cfg = replace(cfg, model=replace(cfg.model, intensity=intensity))
    train_ds = SliceDataset([prepare_volume(x, cfg.model) for x in train_items], cfg.model, cfg.data, cfg.augment)
    val_volumes = [prepare_volume(x, cfg.model) for x in val_items]
    del train_items, val_items
    report = build_report(train_ds.volumes + val_volumes, cfg.model, cfg.data.min_pixels)
    if info.is_main:
        atomic_write_text(out / "data_report.json", json.dumps(report.to_dict(), indent=2))
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        log.info("data ready in %.1f s: %s", time.perf_counter() - t0, report.summary())

    model = build_model(cfg.model)
    # Training-only sampling sizes live on torchvision's modules, not in the architecture (ModelConfig).
    model.roi_heads.fg_bg_sampler.batch_size_per_image = cfg.roi_samples_per_image
    model.rpn._pre_nms_top_n["training"] = cfg.rpn_pre_nms_top_n_train
    model.rpn._post_nms_top_n["training"] = cfg.rpn_post_nms_top_n_train
    initial_weights(model, cfg)
    model.to(info.device)
    # Proposal sampling inside the model draws from torch's RNG: give each process its own stream.
    torch.manual_seed(cfg.seed + 7919 * info.rank)
    net: nn.Module = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None, find_unused_parameters=True
        )
    opt = build_optimizer(model, cfg.optim)
    samples_per_epoch = None
    if cfg.steps_per_epoch is not None:
        samples_per_epoch = cfg.steps_per_epoch * cfg.batch_size * cfg.optim.accumulate * info.world_size
    n_samples = len(train_ds.epoch_samples(0, cfg.seed, samples_per_epoch))
    batches_per_epoch = math.ceil(math.ceil(n_samples / info.world_size) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.optim.accumulate)
    total_steps = steps_per_epoch * cfg.epochs
    sched = build_scheduler(opt, total_steps, cfg.optim)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and info.device.type == "cuda")

    epoch, start_batch, step, best = 0, 0, 0, None
    state_path = out / "train_state.pt"
    if resume:
        state = load_state(state_path)
        check_compatible(ModelConfig.from_dict(json.loads(state["model_config"])), cfg.model, source=str(state_path))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        epoch, start_batch, step, best = state["epoch"], state["batch"], state["step"], state["best"]
        run.history = json.loads(state["history"])
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            restore_rng(rngs[info.rank])
        else:
            log.warning("resuming with %d processes instead of %d: RNG streams re-seeded", info.world_size, len(rngs))
            torch.manual_seed(cfg.seed + 7919 * info.rank + step)
        log.info("resumed at epoch %d batch %d (step %d)", epoch, start_batch, step)

    def write_state(ep: int, batch: int) -> None:
        rngs = [capture_rng()]
        if info.distributed:
            rngs = [None] * info.world_size
            torch.distributed.all_gather_object(rngs, capture_rng())
        if info.is_main:
            save_state(state_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "epoch": ep, "batch": batch, "step": step, "best": best,
                "rng": rngs, "history": json.dumps(run.history), "model_config": json.dumps(cfg.model.to_dict()),
                "train_config": json.dumps(cfg.to_dict()),
            })
            save_checkpoint(out / "last.safetensors", model, cfg.model, extra=_provenance(cfg, ep, step, run.history))

    stopped = False
    while epoch < cfg.epochs and not stopped:
        samples = train_ds.epoch_samples(epoch, cfg.seed, samples_per_epoch)
        view = EpochView(train_ds, samples)
        sampler = list(DistributedSampler(view, num_replicas=info.world_size, rank=info.rank, shuffle=False))
        loader = DataLoader(view, batch_size=cfg.batch_size, sampler=sampler[start_batch * cfg.batch_size:],
                            collate_fn=collate, num_workers=cfg.num_workers,
                            # Its own generator, so building the loader never draws from the global RNG
                            # (a resumed run must see exactly the RNG stream of an uninterrupted one).
                            generator=torch.Generator().manual_seed(cfg.seed + epoch))
        net.train()
        sums: dict[str, float] = {}
        n_batches = 0
        bar = tqdm(loader, total=batches_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (progress and info.is_main), leave=False)
        for b, (images, targets) in enumerate(bar, start=start_batch):
            images = [im.to(info.device, non_blocking=True) for im in images]
            last_micro = (b + 1) % cfg.optim.accumulate == 0 or b + 1 == batches_per_epoch
            sync = contextlib.nullcontext() if (last_micro or not info.distributed) else net.no_sync()
            with sync:
                with _autocast(info.device, cfg.amp):
                    losses = net(images, _to(targets, info.device))
                loss = sum(losses.values())
                scaler.scale(loss / cfg.optim.accumulate).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            n_batches += 1
            if not last_micro:
                continue
            if cfg.optim.clip_grad_norm:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            if step % cfg.log_every == 0 or step == 1:
                run.scalar("train/loss", loss.item(), step)
                run.scalar("train/lr", sched.get_last_lr()[0], step)
                for k, v in losses.items():
                    run.scalar(f"train/{k}", v.item(), step)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
                log.info("epoch %d step %d loss %.4f", epoch + 1, step, loss.item())
            at_end = b + 1 == batches_per_epoch
            if cfg.max_steps is not None and step >= cfg.max_steps and not at_end:
                write_state(epoch, b + 1)
                stopped = True
                break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not at_end:
                write_state(epoch, b + 1)
        bar.close()
        if stopped:
            break
        epoch_metrics = {k: v / max(n_batches, 1) for k, v in sums.items()}
        epoch_metrics = dict(zip(epoch_metrics, D.mean_across(info, list(epoch_metrics.values()))))
        entry: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": sched.get_last_lr()[0],
                                 "train": epoch_metrics, "time_s": round(time.perf_counter() - t0, 1)}
        epoch += 1
        start_batch = 0
        if val_volumes and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs) and info.is_main:
            entry["val"] = validate(model, val_volumes, cfg.model, info.device, batch_size=cfg.batch_size,
                                    min_pixels=cfg.data.min_pixels)
            for k, v in entry["val"].items():
                run.scalar(f"val/{k}", v, step)
        score = _score(entry, cfg.best_metric)
        improved = score is not None and (best is None or score > best)
        if improved:
            best = score
        entry["best"] = improved
        stale = _stale_evaluations(run.history + [entry], cfg.best_metric)
        early_stop = D.broadcast_flag(info, cfg.patience > 0 and stale >= cfg.patience)
        if early_stop:
            entry["early_stop"] = True
        run.history.append(entry)
        if info.is_main:
            atomic_write_text(run.out / "metrics.json", json.dumps(run.history, indent=2))
            log.info("epoch %d: %s", epoch, json.dumps({k: v for k, v in entry.items() if k != "train"}))
        write_state(epoch, 0)
        if improved and info.is_main:
            save_checkpoint(run.out / "best.safetensors", model, cfg.model, extra=_provenance(cfg, epoch, step, run.history))
        D.barrier(info)
        if early_stop:
            log.info("early stop after epoch %d: no better %s in the last %d validations (best kept)",
                     epoch, cfg.best_metric, stale)
            break
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    best_path = run.out / "best.safetensors"
    return TrainResult(run.out, run.out / "last.safetensors", best_path if best_path.exists() else None,
                       state_path, step, run.history, stopped_early=bool(run.history and
                                                                        run.history[-1].get("early_stop")))


def _score(entry: dict[str, Any], metric: str) -> float | None:
    """Higher-is-better score of an epoch entry for `metric` (negated training loss for "loss")."""
    if metric == "loss":
        return -entry["train"]["loss"]
    value = entry.get("val", {}).get(metric)
    return None if value is None or value < 0 else float(value)


def _stale_evaluations(history: list[dict[str, Any]], metric: str) -> int:
    """Scored epochs (validated, or every epoch for "loss") since the last new best; all of them when none was best."""
    stale = 0
    for entry in reversed(history):
        if entry.get("best"):
            break
        stale += _score(entry, metric) is not None
    return stale


def _provenance(cfg: TrainConfig, epoch: int, step: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    """What goes into a checkpoint's `extra`: training config, position and the latest validation metrics."""
    last_val = next((h["val"] for h in reversed(history) if "val" in h), None)
    return {"epoch": epoch, "step": step, "val": last_val, "train_config": cfg.to_dict()}


