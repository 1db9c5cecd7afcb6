import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from medmrcnn.errors import CheckpointError
from medmrcnn.modeling import build_model, load_model, read_checkpoint, save_checkpoint
from tests.conftest import tiny_config


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(labels=("liver", "tumour"))
    model = build_model(cfg).eval()
    path = save_checkpoint(tmp_path / "model.safetensors", model, cfg, extra={"epoch": 3})
    return model, cfg, path


def test_round_trip_gives_identical_outputs(saved):
    model, cfg, path = saved
    x = [torch.rand(1, 96, 96)]
    with torch.inference_mode():
        a = model(x)[0]
    loaded, loaded_cfg = load_model(path, expected=cfg)
    with torch.inference_mode():
        b = loaded(x)[0]
    assert loaded_cfg == cfg
    for k in a:
        assert torch.equal(a[k], b[k])
    ckpt = read_checkpoint(path)
    assert ckpt.extra == {"epoch": 3} and ckpt.medmrcnn_version


def test_no_temporary_files_are_left(saved, tmp_path):
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_tampered_weights_are_refused(saved, tmp_path):
    _, _, path = saved
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.endswith("conv1.weight"))
    tensors[name] = tensors[name] + 0.01
    bad = tmp_path / "tampered.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(bad)


def test_truncated_and_pickled_files_are_refused(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, path = saved
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.safetensors"):
        load_model(trunc)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(CheckpointError):
        load_model(evil)
    assert not (tmp_path / "PWNED").exists()


def test_label_and_architecture_mismatch_are_named(saved):
    _, cfg, path = saved
    with pytest.raises(CheckpointError, match=r"label map mismatch.*labels"):
        load_model(path, expected=tiny_config(labels=("liver", "kidney")))
    with pytest.raises(CheckpointError, match=r"architecture mismatch.*backbone"):
        load_model(path, expected=tiny_config(labels=("liver", "tumour"), backbone="resnet34"))


def test_metadata_is_versioned_json(saved):
    _, cfg, path = saved
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "medmrcnn-checkpoint" and meta["format_version"] == "1"
    assert json.loads(meta["model_config"])["labels"] == ["liver", "tumour"]
