"""Initialisation from our checkpoints and torchvision files; results do not depend on DataLoader workers; AMP on CUDA."""

import pytest
import torch
from torchvision.models import resnet18

from medmrcnn.errors import CheckpointError
from medmrcnn.modeling import build_model, read_checkpoint, save_checkpoint
from medmrcnn.training import train
from medmrcnn.training.engine import initial_weights
from tests.conftest import tiny_config
from tests.training.conftest import micro_train_config


def test_init_from_a_torchvision_imagenet_file(tmp_path):
    src = resnet18(weights=None).state_dict()
    torch.save(src, tmp_path / "resnet18.pth")
    cfg = micro_train_config(tmp_path / "run", init=str(tmp_path / "resnet18.pth"))
    model = build_model(cfg.model)
    initial_weights(model, cfg)
    own = model.state_dict()
    assert torch.equal(own["backbone.body.layer2.0.conv1.weight"], src["layer2.0.conv1.weight"])
    grey = src["conv1.weight"].sum(dim=1, keepdim=True)  # RGB kernels folded for one-channel input
    assert torch.allclose(own["backbone.body.conv1.weight"], grey)


def test_init_from_our_checkpoint_with_other_labels(tmp_path):
    donor_cfg = tiny_config(labels=("liver", "kidney", "tumour"))
    donor = build_model(donor_cfg)
    save_checkpoint(tmp_path / "donor.safetensors", donor, donor_cfg)
    cfg = micro_train_config(tmp_path / "run", init=str(tmp_path / "donor.safetensors"))
    model = build_model(cfg.model)
    initial_weights(model, cfg)
    own, theirs = model.state_dict(), donor.state_dict()
    assert torch.equal(own["backbone.fpn.layer_blocks.0.0.weight"], theirs["backbone.fpn.layer_blocks.0.0.weight"])
    assert own["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2  # nucleus + background: fresh head
    other = tiny_config(labels=("nucleus",), fpn_channels=32)
    save_checkpoint(tmp_path / "other.safetensors", build_model(other), other)
    with pytest.raises(CheckpointError, match="fpn_channels"):
        initial_weights(model, micro_train_config(tmp_path / "r", init=str(tmp_path / "other.safetensors")))


def test_workers_do_not_change_the_result(tmp_path):
    runs = [train(micro_train_config(tmp_path / f"w{n}", steps_per_epoch=2, num_workers=n, data__phantom__n_train=2),
                  progress=False) for n in (0, 2)]
    a, b = (read_checkpoint(r.last).state_dict for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(tmp_path, amp):
    result = train(micro_train_config(tmp_path / amp, steps_per_epoch=3, amp=amp, device="cuda",
                                      data__phantom__n_train=2), progress=False)
    weights = read_checkpoint(result.last).state_dict
    assert all(torch.isfinite(w.float()).all() for w in weights.values())
    assert result.metrics[-1]["train"]["loss"] == result.metrics[-1]["train"]["loss"]  # not NaN
