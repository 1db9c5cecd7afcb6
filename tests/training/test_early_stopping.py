"""Early stopping: a run ends after `patience` validations without a new best and keeps the best checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from medmrcnn.modeling import checkpoint as checkpoint_module
from medmrcnn.modeling import read_checkpoint
from medmrcnn.training import engine, train
from tests.training.conftest import micro_train_config


def _scripted_validation(monkeypatch, scores: list[float]) -> list[dict[str, torch.Tensor]]:
    """Replace validation by a fixed sequence of mask_AP50 values; returns the weights seen at each validation."""
    seen: list[dict[str, torch.Tensor]] = []

    def validate(model, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"mask_AP50": scores[len(seen) - 1], "dice_mean": 0.0}

    monkeypatch.setattr(engine, "validate", validate)
    return seen


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_training_stops_after_patience_validations_without_improvement(tmp_path, monkeypatch):
    # Epoch 2 is the best; 3, 4 and 5 do not beat it (5 only equals it), so patience 3 ends the run after epoch 5
    # although epoch 6 would have been better.
    seen = _scripted_validation(monkeypatch, [0.2, 0.5, 0.4, 0.45, 0.5, 0.9, 0.9, 0.9])
    cfg = micro_train_config(tmp_path / "run", epochs=8, steps_per_epoch=1, patience=3, threads=1,
                             data__phantom__n_val=1, data__phantom__n_train=2)
    result = train(cfg, progress=False)
    assert result.stopped_early and result.steps == 5 and len(seen) == 5
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert [h["best"] for h in history] == [True, True, False, False, False]
    assert history[-1]["early_stop"] and not any(h.get("early_stop") for h in history[:-1])
    best, last = read_checkpoint(result.best), read_checkpoint(result.last)
    assert best.extra["epoch"] == 2 and last.extra["epoch"] == 5
    assert _same(best.state_dict, seen[1]) and not _same(best.state_dict, seen[4])
    assert _same(last.state_dict, seen[4])
    assert not list((tmp_path / "run").glob(".*.tmp"))  # every write went through a temporary file and a rename


def test_without_patience_every_epoch_runs(tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.5, 0.1, 0.1, 0.1])
    cfg = micro_train_config(tmp_path / "run", epochs=4, steps_per_epoch=1, threads=1, data__phantom__n_val=1,
                             data__phantom__n_train=2)
    result = train(cfg, progress=False)
    assert not result.stopped_early and result.steps == 4
    assert read_checkpoint(result.best).extra["epoch"] == 1


def test_an_interrupted_write_of_a_new_best_keeps_the_previous_best(tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.3, 0.6, 0.7])
    real_save = checkpoint_module.save_file
    best_writes = []

    def save_file(tensors, filename, metadata=None):
        if ".best.safetensors." in filename:
            best_writes.append(filename)
            if len(best_writes) == 2:  # the second new best (epoch 2): power cut half-way through the file
                with open(filename, "wb") as f:
                    f.write(b"torn")
                raise KeyboardInterrupt
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)
    cfg = micro_train_config(tmp_path / "run", epochs=3, steps_per_epoch=1, patience=1, threads=1,
                             data__phantom__n_val=1, data__phantom__n_train=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert read_checkpoint(tmp_path / "run" / "best.safetensors").extra["epoch"] == 1
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_patience_must_not_be_negative():
    with pytest.raises(ValueError, match="patience"):
        micro_train_config("unused", patience=-1)
