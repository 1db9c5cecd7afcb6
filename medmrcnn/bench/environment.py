"""The machine, the software versions and the date a benchmark ran on (recorded with every result)."""

from __future__ import annotations

import datetime
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from medmrcnn.bench.compare import load_average
from medmrcnn.bench.settings import available_cpus

PACKAGES = ("torch", "torchvision", "numpy", "monai", "pydicom", "highdicom", "SimpleITK", "scipy", "safetensors",
            "onnxruntime", "onnx")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    """The commit of a source checkout medmrcnn runs from (None when installed from a wheel)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_environment(device: str) -> dict[str, Any]:
    """Machine (CPU model, cores available, memory, GPU), versions, date and load average now."""
    import torch

    from medmrcnn import __version__

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_model(),
        "cpus_available": available_cpus(), "memory_gib": _memory_gib(), "load_average_start": load_average(),
        "medmrcnn": __version__, "git_commit": _git_commit(),
        "versions": {p: _version(p) for p in PACKAGES},
        "torch_cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
    }
    if device.startswith("cuda"):
        # From nvidia-smi, not torch: the measuring processes report CUDA figures; this one only orchestrates.
        env["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                     "--format=csv,noheader"], capture_output=True, text=True,
                                    check=False).stdout.strip() or None
    return env
