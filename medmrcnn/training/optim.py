"""Optimiser and learning-rate schedule: AdamW or SGD, linear warm-up then cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from medmrcnn.training.config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters; norms and biases get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of cfg.lr at optimiser step `step` (0-based): warm-up from 1/warmup, then cosine to min_lr_ratio
    (or constant, or "exponential": from min_lr_ratio up to 1 over the run, for lr_range_test)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "exponential":  # the learning-rate range test: lr * min_lr_ratio up to lr, geometrically
        span = max(total_steps - cfg.warmup_steps - 1, 1)
        return cfg.min_lr_ratio ** (1.0 - min((step - cfg.warmup_steps) / span, 1.0))
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(opt: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepping once per optimiser step along lr_factor."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, cfg))
