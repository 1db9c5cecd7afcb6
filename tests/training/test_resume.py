"""Resume: an interrupted run continues exactly (same next-step loss, same weights); state files are never torn."""

import pickle

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medmrcnn.errors import CheckpointError
from medmrcnn.modeling import read_checkpoint
from medmrcnn.training import train
from medmrcnn.training.state import load_state, save_state
from tests.training.conftest import micro_train_config


def _losses(run_dir) -> dict[int, float]:
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("train/loss")}


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    common = dict(epochs=2, steps_per_epoch=3, data__phantom__n_train=3)
    full = train(micro_train_config(tmp_path / "full", **common), progress=False)
    cut = micro_train_config(tmp_path / "cut", max_steps=4, **common)  # stops inside epoch 2
    first = train(cut, progress=False)
    assert first.steps == 4 and load_state(first.state)["batch"] == 1
    cut.max_steps = None
    resumed = train(cut, resume=True, progress=False)
    assert full.steps == resumed.steps == 6
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert b[5] == pytest.approx(a[5], rel=1e-5, abs=1e-6)  # the next step after the interruption
    assert b[6] == pytest.approx(a[6], rel=1e-5, abs=1e-6)
    wa, wb = read_checkpoint(full.last).state_dict, read_checkpoint(resumed.last).state_dict
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2]


def test_resume_without_state_or_with_another_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no training state"):
        train(micro_train_config(tmp_path / "none"), resume=True, progress=False)
    train(micro_train_config(tmp_path / "run", steps_per_epoch=1), progress=False)
    other = micro_train_config(tmp_path / "run", model__fpn_channels=32)
    with pytest.raises(CheckpointError, match="fpn_channels"):
        train(other, resume=True, progress=False)


def test_a_failed_write_leaves_the_previous_state_intact(tmp_path, monkeypatch):
    path = tmp_path / "train_state.pt"
    save_state(path, {"step": 1, "weights": torch.ones(3)})

    def torn_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt  # the user hit Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, {"step": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    state = load_state(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["train_state.pt"]


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_states_with_arbitrary_objects_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "medmrcnn-train-state-1", "x": _Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_state(path)
