"""Fixtures for the batch tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.batch.helpers import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny CT checkpoint that finds nothing, fast (see `save_tiny_checkpoint`)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.safetensors")
