"""Versioned checkpoints: safetensors weights + JSON metadata, hashed, written atomically, loaded without pickle.

Metadata keys (all strings in the safetensors header):
    format = "medmrcnn-checkpoint", format_version = "1", medmrcnn_version,
    model_config (JSON of ModelConfig.to_dict(), labels included), sha256 (of the tensors, see _digest),
    extra (JSON: free-form provenance such as training epoch and metrics).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from medmrcnn.errors import CheckpointError
from medmrcnn.fileio import atomic_path
from medmrcnn.modeling.builder import build_model
from medmrcnn.modeling.config import ModelConfig

FORMAT = "medmrcnn-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint holds: model config (with labels), weights and provenance."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    medmrcnn_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, cfg: ModelConfig, extra: dict[str, Any] | None = None) -> Path:
    """Write model weights + config atomically to `path` (a .safetensors file) and return the path."""
    from medmrcnn import __version__

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "medmrcnn_version": __version__,
        "model_config": json.dumps(cfg.to_dict()),
        "sha256": _digest(tensors),
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint file; raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: not a readable medmrcnn checkpoint (safetensors: {str(e).splitlines()[0]}); "
            "pickled .pt/.pth files are never executed - convert torchvision weights with load_torchvision_weights"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a medmrcnn checkpoint (format={meta.get('format')!r})")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta['format_version']} is newer than this medmrcnn supports "
            f"({FORMAT_VERSION}); upgrade medmrcnn"
        )
    if _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"{path}: checkpoint weights do not match their recorded SHA-256 (file altered or damaged)")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["model_config"]))
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint metadata is invalid ({e})") from None
    return Checkpoint(cfg, tensors, meta.get("medmrcnn_version", ""), extra)


def load_model(
    path: str | Path,
    expected: ModelConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ModelConfig]:
    """Build the model a checkpoint describes and load its weights (eval mode, on `device`).

    If `expected` is given, the checkpoint's labels and architecture must equal it; otherwise a CheckpointError
    names each field that differs.
    """
    ckpt = read_checkpoint(path)
    if expected is not None:
        check_compatible(ckpt.config, expected, source=str(path))
    model = build_model(ckpt.config)
    missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the architecture in its own config "
            f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
        )
    return model.to(device).eval(), ckpt.config


def check_compatible(found: ModelConfig, expected: ModelConfig, source: str = "checkpoint") -> None:
    """Raise CheckpointError listing every field (labels first) where `found` differs from `expected`."""
    a, b = found.to_dict(), expected.to_dict()
    diffs = [k for k in a if a[k] != b[k] and k != "extra"]
    diffs.sort(key=lambda k: k != "labels")
    if diffs:
        detail = "; ".join(f"{k}: checkpoint has {a[k]!r}, expected {b[k]!r}" for k in diffs)
        what = "label map" if diffs[0] == "labels" else "architecture"
        raise CheckpointError(f"{source}: {what} mismatch - {detail}")
