"""Fixtures for the command-line tests: a tiny checkpoint and small phantom studies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmrcnn.modeling import build_model, save_checkpoint
from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A seeded, untrained tiny model with the CT classes.

    Its network-level score floor (0.95) is above anything an untrained head scores, so it finds nothing and
    runs fast: the tests that use it check the batch machinery; test_demo checks what trained weights find.
    """
    torch.manual_seed(0)
    cfg = tiny_config(labels=("liver", "kidney", "tumour"), intensity="ct:soft_tissue", box_score_thresh=0.95)
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.safetensors", build_model(cfg), cfg)
