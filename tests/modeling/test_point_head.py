"""The PointRend-style point head: contract, sampling, subdivision, configuration and checkpoints."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from medmrcnn.inference.detector import RawDetections, merge_views, run_detector
from medmrcnn.modeling import ModelConfig, build_model, load_model, read_checkpoint, save_checkpoint
from medmrcnn.modeling.point_head import PointRendRoIHeads, most_uncertain_cells, point_sample, uncertain_training_points
from medmrcnn.training import instances_to_target
from tests.conftest import tiny_config


def _ring_target(size: int = 96) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    ring = (r <= 30) & (r >= 27)
    image = ring.float()[None] + 0.05 * torch.randn(1, size, size)
    return image, instances_to_target(ring.numpy().astype("uint8"), {1: 1})


def test_point_sample_reads_box_relative_cell_centres():
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    pts = torch.tensor([[[0.125, 0.125], [0.875, 0.125], [0.125, 0.875], [0.625, 0.375]]])
    assert point_sample(grid, pts)[0, 0].tolist() == [0.0, 3.0, 12.0, 6.0]


def test_uncertain_cells_and_training_points_favour_the_boundary():
    logits = torch.full((1, 1, 8, 8), 5.0)
    logits[0, 0, 3, 5] = 0.1
    idx, pts = most_uncertain_cells(logits, 1)
    assert idx.tolist() == [[3 * 8 + 5]]
    torch.testing.assert_close(pts, torch.tensor([[[5.5 / 8, 3.5 / 8]]]))
    # Uncertain where x is near 0.5: most training points land near that line, a quarter are uniform.
    xs = torch.linspace(-1, 1, 28)
    torch.manual_seed(0)
    pts = uncertain_training_points((xs * 10).expand(1, 1, 28, 28).contiguous(), 400)
    near = ((pts[0, :, 0] - 0.5).abs() < 0.1).float().mean()
    assert pts.shape == (1, 400, 2) and near > 0.6  # uniform points: 0.2


def test_refined_model_keeps_torchvisions_contract_and_masks_reach_slice_resolution():
    torch.manual_seed(0)
    cfg = tiny_config(mask_refinement="pointrend")
    model = build_model(cfg)
    assert isinstance(model.roi_heads, PointRendRoIHeads)
    image, target = _ring_target()
    model.train()
    losses = model([image], [target])
    assert set(losses) >= {"loss_mask", "loss_mask_point", "loss_classifier", "loss_objectness"}
    sum(losses.values()).backward()
    assert model.roi_heads.point_head.predictor.weight.grad.abs().sum() > 0
    model.eval()
    with torch.inference_mode():
        out = model([image])[0]
        raw = run_detector(model, image[None])[0]
    assert out["masks"].shape == (len(out["boxes"]), 1, 96, 96) and out["masks"].dtype == torch.float32
    side = float((raw.boxes[:, 2:] - raw.boxes[:, :2]).max())
    m = raw.mask_probs.shape[-1]
    assert m >= min(side, cfg.mask_max_resolution) and m // 2 < side and m % cfg.mask_resolution == 0
    assert 0 <= raw.mask_probs.min() and raw.mask_probs.max() <= 1


def test_plain_model_is_unchanged_by_the_option():
    plain = build_model(tiny_config())
    assert type(plain.roi_heads).__name__ == "RoIHeads"
    refined = build_model(tiny_config(mask_refinement="pointrend"))
    extra = set(refined.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("roi_heads.point_head.") for k in extra)
    assert set(plain.state_dict()) <= set(refined.state_dict())


def test_config_validation():
    with pytest.raises(ValueError, match="mask_refinement"):
        ModelConfig(mask_refinement="pointrender")
    with pytest.raises(ValueError, match="mask_max_resolution"):
        ModelConfig(mask_max_resolution=14)


def test_checkpoint_keeps_refinement_and_old_checkpoints_load_without_it(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(mask_refinement="pointrend", point_head_channels=32)
    model = build_model(cfg).eval()
    path = save_checkpoint(tmp_path / "r.safetensors", model, cfg)
    loaded, loaded_cfg = load_model(path, expected=cfg)
    assert loaded_cfg.mask_refinement == "pointrend" and isinstance(loaded.roi_heads, PointRendRoIHeads)
    x = [torch.rand(1, 64, 64)]
    with torch.inference_mode():
        a, b = model(x)[0], loaded(x)[0]
    for k in a:
        assert torch.equal(a[k], b[k])
    # A checkpoint written before the option existed: its config lacks every point-head key.
    plain = tiny_config()
    old = tmp_path / "old.safetensors"
    save_checkpoint(old, build_model(plain), plain)
    with safe_open(str(old), framework="pt") as f:
        meta = f.metadata()
    d = json.loads(meta["model_config"])
    for k in ("mask_refinement", "point_head_channels", "point_head_layers", "point_train_points",
              "point_subdivision_points", "mask_max_resolution"):
        d.pop(k)
    meta["model_config"] = json.dumps(d)
    save_file(load_file(str(old)), str(old), metadata=meta)
    assert read_checkpoint(old).config.mask_refinement == "none"


def test_shipped_demo_weights_load_unrefined():
    from importlib.resources import files

    model, cfg = load_model(files("medmrcnn") / "weights" / "demo.safetensors")
    assert cfg.mask_refinement == "none" and type(model.roi_heads).__name__ == "RoIHeads"


def test_merge_views_accepts_refined_masks_of_different_sizes():
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    a = RawDetections(box, torch.tensor([0.9]), torch.tensor([1]), torch.ones(1, 56, 56))
    b = RawDetections(box + 1, torch.tensor([0.8]), torch.tensor([1]), torch.ones(1, 28, 28))
    merged = merge_views([a, b], iou=0.5)
    assert len(merged) == 1 and merged.mask_probs.shape == (1, 56, 56)
    assert merged.mask_probs[0, 4:-4, 4:-4].min() > 0.99
