"""Shared fixtures: tiny model configs and synthetic data (generated, never downloaded)."""

from __future__ import annotations

import os

import pytest
import torch

from medmrcnn.modeling.config import ModelConfig

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_config(**overrides) -> ModelConfig:
    """A small, fast model (ResNet-18 stages 1-3, 64-channel FPN) for CPU tests."""
    kw = dict(
        labels=("nucleus",), backbone="resnet18", returned_layers=(1, 2, 3), fpn_channels=64,
        box_representation_size=256, mask_head_channels=(64, 64), detections_per_image=100,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=300,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_config()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
