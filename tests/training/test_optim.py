"""Optimiser and schedule: warm-up then cosine to the floor; no decay on norms/biases; frozen stages untouched."""

import numpy as np
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


def test_the_range_test_schedule_rises_geometrically_and_the_curve_is_read_before_divergence():
    from medmrcnn.training.lrfind import summarise_range_test

    cfg = OptimConfig(lr=0.1, min_lr_ratio=1e-4, warmup_steps=0, schedule="exponential")
    lrs = [0.1 * lr_factor(s, 101, cfg) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[50] == pytest.approx(1e-3) and lrs[100] == pytest.approx(0.1)
    # A loss that falls fastest near 1e-3, bottoms out at 1e-2 and explodes beyond.
    x = np.log10(lrs)
    losses = list(2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -2, 10 ** (3 * (x + 2)) - 1, 0))
    curve = summarise_range_test(lrs, losses)
    assert 3e-3 < curve["min_loss_lr"] < 3e-2 and curve["suggested_lr"] == pytest.approx(curve["min_loss_lr"] / 10)
    assert curve["diverged_at_lr"] is not None and curve["diverged_at_lr"] > curve["min_loss_lr"]


def test_lr_range_test_runs_training_with_a_rising_rate(tmp_path):
    from medmrcnn.training.lrfind import lr_range_test
    from tests.training.conftest import micro_train_config

    curve = lr_range_test(micro_train_config(tmp_path / "unused", threads=1), tmp_path / "lr", steps=6, lr_min=1e-4,
                          lr_max=1e-2)
    assert len(curve["loss"]) == 6 and curve["lr"][0] == pytest.approx(1e-4) and curve["lr"][-1] == pytest.approx(1e-2)
    assert all(np.isfinite(curve["loss"])) and (tmp_path / "lr" / "lr_range.json").is_file()


def test_train_cli_lr_find_prints_the_suggestion(tmp_path, capsys):
    import json

    import yaml

    from medmrcnn.cli import main
    from tests.training.conftest import micro_train_config

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(micro_train_config(tmp_path / "run", threads=1).to_dict()))
    assert main(["train", "--config", str(config), "--lr-find", "5", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert 1e-5 <= printed["suggested_lr"] <= 1e-2
    assert printed["min_loss_lr"] == pytest.approx(10 * printed["suggested_lr"])
    assert (tmp_path / "run" / "lr_find" / "lr_range.json").is_file()
    assert not (tmp_path / "run" / "best.safetensors").exists()  # a range test is not a training run
