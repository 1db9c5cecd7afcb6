"""`medmrcnn info`: versions, CUDA availability and the device `auto` picks."""

from __future__ import annotations

import json
from importlib import metadata

import torch

from medmrcnn.cli import main


def test_info_reports_versions_and_device(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for name in ("torch", "torchvision", "monai", "pydicom", "highdicom"):
        assert info["versions"][name] == metadata.version(name)
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["default_device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert main(["info"]) == 0
    table = capsys.readouterr().out
    assert f"torch          {metadata.version('torch')}" in table and "device" in table
