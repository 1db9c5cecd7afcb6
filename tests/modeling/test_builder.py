import pytest
import torch
from torchvision.models.detection import MaskRCNN

from medmrcnn.modeling import ModelConfig, build_model
from medmrcnn.modeling.config import default_anchor_sizes
from tests.conftest import tiny_config


def _target(h=64, w=64):
    masks = torch.zeros((1, h, w), dtype=torch.uint8)
    masks[0, 10:30, 12:28] = 1
    return {"boxes": torch.tensor([[12.0, 10.0, 28.0, 30.0]]), "labels": torch.tensor([1]), "masks": masks}


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101"])
@pytest.mark.parametrize("in_channels", [1, 3, 5])
def test_every_backbone_and_channel_count_trains_and_predicts(backbone, in_channels):
    cfg = ModelConfig(labels=("liver", "tumour"), backbone=backbone, in_channels=in_channels,
                      fpn_channels=32, box_representation_size=64, mask_head_channels=(32,))
    model = build_model(cfg)
    assert isinstance(model, MaskRCNN)
    assert model.backbone.body.conv1.in_channels == in_channels
    images = [torch.rand(in_channels, 64, 64)]
    model.train()
    losses = model(images, [_target()])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad is not None
    model.eval()
    with torch.inference_mode():
        out = model(images)[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    assert out["masks"].shape[1:] == (1, 64, 64)


def test_native_resolution_is_default_and_size_is_configurable():
    model = build_model(tiny_config()).eval()
    images, _ = model.transform([torch.rand(1, 100, 120)])
    assert images.image_sizes == [(100, 120)]  # not upscaled to 800 px
    model = build_model(tiny_config(min_size=200, max_size=400)).eval()
    images, _ = model.transform([torch.rand(1, 100, 120)])
    assert images.image_sizes == [(200, 240)]


def test_no_imagenet_normalisation_on_inputs():
    t = build_model(tiny_config()).transform
    x = torch.full((1, 32, 32), 0.25)
    assert torch.equal(t.normalize(x), x)


def test_heads_follow_config():
    cfg = tiny_config(labels=("a", "b", "c"), detections_per_image=500, mask_resolution=56)
    m = build_model(cfg)
    assert m.roi_heads.box_predictor.cls_score.out_features == 4
    assert m.roi_heads.detections_per_img == 500
    assert m.roi_heads.mask_roi_pool.output_size == (28, 28)
    assert m.rpn.anchor_generator.sizes == cfg.resolved_anchor_sizes
    assert min(min(s) for s in cfg.resolved_anchor_sizes) == 8  # small lesions and cells


def test_trainable_layers_freeze_lower_stages():
    m = build_model(tiny_config(trainable_layers=2, norm="frozen_batch"))
    body = dict(m.backbone.body.named_parameters())
    assert not body["conv1.weight"].requires_grad and not body["layer1.0.conv1.weight"].requires_grad
    assert body["layer3.0.conv1.weight"].requires_grad


@pytest.mark.parametrize("bad", [dict(backbone="vgg16"), dict(in_channels=2), dict(min_size=512),
                                 dict(returned_layers=(5,)), dict(anchor_sizes=((8,), (16,)))])
def test_invalid_configs_are_refused(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


def test_default_anchor_sizes_cover_cells_to_organs():
    sizes = default_anchor_sizes(5)
    assert len(sizes) == 5 and sizes[0][0] == 8 and sizes[-1][-1] == 384


def test_config_round_trip():
    cfg = tiny_config(in_channels=3, anchor_sizes=((8, 16), (24, 32), (48, 64), (96, 128)))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "lables": ["x"]})
