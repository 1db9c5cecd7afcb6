"""Local torchvision weight files (same key layout as the published COCO / ImageNet files)."""

import pickle

import pytest
import torch
import torchvision

from medmrcnn.errors import CheckpointError
from medmrcnn.modeling import ModelConfig, build_model, load_torchvision_weights


def test_coco_maskrcnn_file_loads_with_class_heads_reinitialised(tmp_path):
    torch.manual_seed(1)
    coco = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / "maskrcnn_resnet50_fpn_coco.pth"
    torch.save(coco.state_dict(), path)
    cfg = ModelConfig(labels=("tumour",), backbone="resnet50", in_channels=3, norm="frozen_batch",
                      anchor_sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=(0.5, 1.0, 2.0))
    model = build_model(cfg)
    report = load_torchvision_weights(model, path)
    own, src = model.state_dict(), coco.state_dict()
    assert torch.equal(own["backbone.body.layer3.0.conv1.weight"], src["backbone.body.layer3.0.conv1.weight"])
    assert torch.equal(own["rpn.head.conv.0.0.weight"], src["rpn.head.conv.0.0.weight"])
    assert torch.equal(own["roi_heads.mask_head.0.0.weight"], src["roi_heads.mask_head.0.0.weight"])
    assert own["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2
    assert "roi_heads.box_predictor.cls_score.weight" in report["reinitialised"]
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight" in report["reinitialised"]


def test_imagenet_resnet_file_adapts_first_conv_to_one_channel(tmp_path):
    torch.manual_seed(2)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(net.state_dict(), path)
    model = build_model(ModelConfig(labels=("nucleus",), backbone="resnet18", in_channels=1))
    load_torchvision_weights(model, path)
    w = model.backbone.body.conv1.weight
    assert w.shape[1] == 1
    # a grey image gives the same conv1 response as the RGB kernels on the grey RGB image
    grey = torch.rand(1, 1, 32, 32)
    a = torch.nn.functional.conv2d(grey, w, stride=2, padding=3)
    b = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), net.conv1.weight, stride=2, padding=3)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(model.backbone.body.layer4[0].conv1.weight, net.layer4[0].conv1.weight)


def test_pickled_code_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    class Evil:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_torchvision_weights(build_model(ModelConfig(backbone="resnet18")), path)
    assert not (tmp_path / "PWNED").exists()
