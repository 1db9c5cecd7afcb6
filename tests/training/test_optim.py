"""Optimiser and schedule: warm-up then cosine to the floor; no decay on norms/biases; frozen stages untouched."""

import pytest
import torch

from medmrcnn.modeling import build_model
from medmrcnn.training import OptimConfig
from medmrcnn.training.optim import build_optimizer, build_scheduler, lr_factor
from tests.conftest import tiny_config


def test_warmup_then_cosine_to_the_floor():
    cfg = OptimConfig(warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(s, 110, cfg) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(500, 110, OptimConfig(warmup_steps=0, schedule="constant")) == 1.0


def test_parameter_groups_and_frozen_stages():
    model = build_model(tiny_config(trainable_layers=2))
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, weight_decay=0.01))
    assert isinstance(opt, torch.optim.SGD)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    frozen = [n for n, p in model.named_parameters() if id(p) not in trained]
    assert frozen and all(n.startswith(("backbone.body.conv1", "backbone.body.bn1", "backbone.body.layer1",
                                        "backbone.body.layer2")) for n in frozen)
    sched = build_scheduler(opt, 100, OptimConfig(warmup_steps=4))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 4)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
