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


NUCLEI_STEPS = 120  # CPU fine-tuning steps of the shared real-nuclei model (tests/bench, inference, cli, training)


@pytest.fixture(scope="session")
def nuclei(tmp_path_factory):
    """A compact model fine-tuned on the real DSB2018 nuclei image's training part (medmrcnn.bench.nuclei), with
    the split's data: parts (fit / val / test crops), datalist, weights. Skipped without the stardist wheel data."""
    import importlib.util
    from types import SimpleNamespace

    if importlib.util.find_spec("stardist") is None:
        pytest.skip("real nuclei data: pip install --no-deps stardist (the Makefile does)")
    from medmrcnn.bench.nuclei import finetune_config, split_parts, stardist_nuclei_2d, write_datalist
    from medmrcnn.training import train

    folder = tmp_path_factory.mktemp("nuclei")
    parts = split_parts(*stardist_nuclei_2d())
    datalist = write_datalist(parts, folder / "data")
    result = train(finetune_config(datalist, folder / "run", NUCLEI_STEPS, threads=1, epochs=3), progress=False)
    return SimpleNamespace(parts=parts, datalist=datalist, weights=result.best or result.last, folder=folder,
                           metrics=result.metrics)
