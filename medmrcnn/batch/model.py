"""Load the predictor a batch uses, and the settings that decide its outputs (recorded for resume)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from medmrcnn.errors import CheckpointError

DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "demo.safetensors"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_predictor(
    weights: str | Path | None = None,
    *,
    device: str = "auto",
    batch_size: int | None = None,
    window: str | None = None,
    score_threshold: float | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A `SliceWisePredictor` for `weights` (default: the bundled demo weights) and its output-deciding settings.

    Args:
        weights: medmrcnn .safetensors checkpoint.
        device: "auto", "cpu", "cuda" or "cuda:N".
        batch_size: slices per forward pass (None: automatic).
        window: intensity preset ("ct:soft_tissue", "ct:40,400", "percentile", ...); None: the model's own.
        score_threshold: minimum detection score (None: the checkpoint's calibrated one, else the default).
        tile_size, tile_overlap: tiled inference of large slices (PredictorConfig; None: the defaults).
    Returns:
        (predictor, settings); settings hold the weights' SHA-256 and the predictor config.
    """
    from medmrcnn.inference import SliceWisePredictor
    from medmrcnn.inference.config import calibrated_config

    overrides = {k: v for k, v in (("intensity", window), ("batch_size", batch_size),
                                   ("score_threshold", score_threshold), ("tile_size", tile_size),
                                   ("tile_overlap", tile_overlap)) if v is not None}
    calibrated_config(None, **overrides)  # ValueError names a bad option before the checkpoint is read
    path = Path(weights) if weights is not None else DEMO_WEIGHTS
    if not path.is_file():
        hint = " (the demo weights are missing: reinstall medmrcnn)" if weights is None else ""
        raise CheckpointError(f"{path}: checkpoint file not found{hint}")
    predictor = SliceWisePredictor.from_checkpoint(path, device=device)
    # Thresholds calibrated into the checkpoint (`medmrcnn calibrate`) are the defaults; explicit options win.
    cfg = predictor.cfg = calibrated_config(predictor.model_cfg.extra.get("thresholds"), **overrides)
    decisive = {k: v for k, v in cfg.to_dict().items() if k not in ("batch_size", "amp", "image_key")}
    settings = {"weights": path.name, "weights_sha256": file_sha256(path), "predictor": decisive}
    return predictor, settings
