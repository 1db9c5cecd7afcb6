"""`medmrcnn info`: versions and the device that would be used."""

from __future__ import annotations

import argparse
import json
from importlib import metadata

NAME = "info"
HELP = "print versions of medmrcnn and its main dependencies, CUDA availability and the default device"
PACKAGES = ("torch", "torchvision", "monai", "pydicom", "highdicom", "SimpleITK", "nibabel", "numpy", "scikit-image")


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `info`."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def collect() -> dict[str, object]:
    """Versions, CUDA availability and the device `--device auto` resolves to."""
    import torch

    from medmrcnn import __version__
    from medmrcnn.runtime import resolve_device

    versions = {"medmrcnn": __version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    cuda = torch.cuda.is_available()
    return {
        "versions": versions,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "torch_cuda_build": torch.version.cuda,
        "default_device": str(resolve_device("auto")),
        "cpu_threads": torch.get_num_threads(),
    }


def run(args: argparse.Namespace) -> int:
    """Print the information."""
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for k, v in info["versions"].items():  # type: ignore[union-attr]
        print(f"{k:<14} {v}")
    print(f"{'cuda':<14} {'available: ' + ', '.join(info['cuda_devices']) if info['cuda_available'] else 'not available'}")
    print(f"{'device':<14} {info['default_device']} ({info['cpu_threads']} CPU threads)")
    return 0
