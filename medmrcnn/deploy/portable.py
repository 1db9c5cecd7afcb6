"""Portable models: a medmrcnn checkpoint as TorchScript and ONNX, for serving without medmrcnn (Triton, MONAI Deploy).

The exported network is the per-slice part of the predictor: one preprocessed slice in, its detections out.

    image:  Float32[C, H, W]   one slice after medmrcnn's preprocessing: intensity preset to [0, 1], C = 1 + 2 *
                               context slices, resampled to the model's pixel spacing (model.json says which)
    boxes:  Float32[N, 4]      xyxy in pixels of the image
    labels: Int64[N]           class ids 1..K (names in model.json)
    scores: Float32[N]         detection scores (>= the model's box score threshold)
    masks:  Float32[N, 1, H, W] mask probabilities on the image grid

Slice batching, 3D linking and the writers stay in medmrcnn (docs/deployment.md#portable-models).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmrcnn import __version__
from medmrcnn.errors import ExportError
from medmrcnn.fileio import atomic_path, atomic_write_text

EXPORT_FORMATS = ("torchscript", "onnx")
FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
CARD = "model.json"
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "labels", "scores", "masks")
ONNX_OPSET = 17


class SliceDetector(nn.Module):
    """A torchvision Mask R-CNN (eval mode) with a flat signature: image (C, H, W) -> boxes, labels, scores, masks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of one slice (shapes in the module docstring)."""
        out = self.model([image])[0]
        return out["boxes"], out["labels"], out["scores"], out["masks"]


def model_card(cfg: Any, weights: Path, sha256: str) -> dict[str, Any]:
    """What a server needs besides the network: classes, preprocessing, tensor contract, provenance."""
    return {
        "format": "medmrcnn-portable", "version": 1, "medmrcnn_version": __version__,
        "source_weights": weights.name, "source_sha256": sha256,
        "labels": {name: i + 1 for i, name in enumerate(cfg.labels)},
        "preprocessing": {"intensity": cfg.intensity, "pixel_spacing_mm": cfg.pixel_spacing_mm,
                          "in_channels": cfg.in_channels, "range": [0.0, 1.0]},
        "inputs": {INPUT_NAME: {"dtype": "float32", "shape": [cfg.in_channels, "H", "W"]}},
        "outputs": {"boxes": {"dtype": "float32", "shape": ["N", 4]}, "labels": {"dtype": "int64", "shape": ["N"]},
                    "scores": {"dtype": "float32", "shape": ["N"]},
                    "masks": {"dtype": "float32", "shape": ["N", 1, "H", "W"]}},
        "box_score_threshold": cfg.box_score_thresh, "onnx_opset": ONNX_OPSET,
    }


def _example(cfg: Any) -> torch.Tensor:
    """A traced example slice: not square, so no size is baked in by accident (H and W stay dynamic)."""
    return torch.rand(cfg.in_channels, 96, 112, generator=torch.Generator().manual_seed(0))


def export_model(weights: str | Path, output: str | Path,
                 formats: tuple[str, ...] = EXPORT_FORMATS) -> dict[str, Path]:
    """Export a checkpoint into `output`/ as model.pt (TorchScript) and / or model.onnx, plus model.json; atomically.

    Returns the written paths by format ("card" for model.json). Raises ExportError naming what failed.
    """
    from medmrcnn.batch.model import file_sha256
    from medmrcnn.modeling.checkpoint import load_model

    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {unknown or list(formats)}; choose from {EXPORT_FORMATS}")
    weights, output = Path(weights), Path(output)
    model, cfg = load_model(weights)
    if getattr(cfg, "mask_refinement", "none") != "none":
        raise ExportError(f"{weights}: mask refinement {cfg.mask_refinement!r} is not exportable yet; export a model "
                          "trained with mask_refinement: none")
    detector = SliceDetector(model)
    example = _example(cfg)
    card = model_card(cfg, weights, file_sha256(weights))
    written: dict[str, Path] = {}
    output.mkdir(parents=True, exist_ok=True)
    # The tracer warns about every Python-level branch of torchvision's detection code; the parity check is what
    # tells whether the traced graph is right, so the warnings are not shown.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "torchscript" in formats:
            try:
                traced = torch.jit.trace(detector, (example,), check_trace=False)
            except Exception as e:  # noqa: BLE001 - the tracer raises many types; one line for the user
                raise ExportError(f"{weights}: TorchScript tracing failed: {type(e).__name__}: {e}") from e
            with atomic_path(output / FILES["torchscript"]) as tmp:
                torch.jit.save(traced, str(tmp), _extra_files={"medmrcnn.json": json.dumps(card)})
            written["torchscript"] = output / FILES["torchscript"]
        if "onnx" in formats:
            written["onnx"] = _export_onnx(detector, example, output / FILES["onnx"], card)
    atomic_write_text(output / CARD, json.dumps({**card, "files": {k: p.name for k, p in written.items()}},
                                                indent=2) + "\n")
    written["card"] = output / CARD
    return written


def _export_onnx(detector: SliceDetector, example: torch.Tensor, path: Path, card: dict[str, Any]) -> Path:
    """ONNX through the TorchScript-based exporter, which torchvision's detection models are written for."""
    import onnx

    dynamic = {INPUT_NAME: {1: "height", 2: "width"}, "boxes": {0: "detections"}, "labels": {0: "detections"},
               "scores": {0: "detections"}, "masks": {0: "detections", 2: "height", 3: "width"}}
    with atomic_path(path) as tmp:
        try:
            torch.onnx.export(detector, (example,), str(tmp), opset_version=ONNX_OPSET, dynamo=False,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic)
        except Exception as e:  # noqa: BLE001 - as above
            raise ExportError(f"{path}: ONNX export failed: {type(e).__name__}: {e}") from e
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        onnx.helper.set_model_props(proto, {"medmrcnn": json.dumps(card)})
        onnx.save(proto, str(tmp))
    return path


@dataclass
class Parity:
    """How far an exported model's detections are from PyTorch's on the same slices (max over slices)."""

    detections: list[tuple[int, int]]
    labels_equal: bool
    box_px: float
    score: float
    mask: float

    def within(self, box_px: float = 0.01, score: float = 1e-4, mask: float = 1e-3) -> bool:
        """Same detections in the same order, and every difference within the tolerances."""
        return (all(a == b for a, b in self.detections) and self.labels_equal and self.box_px <= box_px
                and self.score <= score and self.mask <= mask)


def run_exported(path: Path, image: np.ndarray) -> tuple[np.ndarray, ...]:
    """(boxes, labels, scores, masks) of an exported model.pt / model.onnx for one slice (C, H, W) on the CPU."""
    if path.suffix == ".onnx":
        return tuple(onnx_session(path).run(None, {INPUT_NAME: np.ascontiguousarray(image, np.float32)}))
    module = load_torchscript(path)
    with torch.no_grad():
        return tuple(t.numpy() for t in module(torch.from_numpy(np.ascontiguousarray(image, np.float32))))


def load_torchscript(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """An exported model.pt, loaded on `device`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PyTorch deprecates TorchScript; Triton still serves it
        return torch.jit.load(str(path), map_location=device)


_SESSIONS: dict[Path, Any] = {}


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session for `path` (cached)."""
    import onnxruntime as ort

    if path not in _SESSIONS:
        _SESSIONS[path] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _SESSIONS[path]


def phantom_slices(cfg: Any, n: int = 3) -> list[np.ndarray]:
    """`n` slices of a CT phantom preprocessed as the predictor would (intensity, context, pixel spacing)."""
    from medmrcnn.synthetic import make_ct_phantom
    from medmrcnn.transforms import normalise_volume, slice_with_context

    px = float(cfg.pixel_spacing_mm or 1.4)
    ph = make_ct_phantom(shape=(n + 4, int(224 / px), int(200 / px)), spacing=(5.0, px, px), n_tumours=2, seed=3)
    image = normalise_volume(ph.volume, cfg.intensity)
    return [slice_with_context(image, z, cfg.context_slices) for z in range(2, 2 + n)]


def compare_with_pytorch(weights: str | Path, exported: Path, images: list[np.ndarray]) -> Parity:
    """Run the checkpoint in PyTorch and the exported model on the same slices; the largest differences."""
    from medmrcnn.modeling.checkpoint import load_model

    detector = SliceDetector(load_model(weights)[0])
    counts, labels_equal, box, score, mask = [], True, 0.0, 0.0, 0.0
    for image in images:
        with torch.no_grad():
            ref = [t.numpy() for t in detector(torch.from_numpy(np.ascontiguousarray(image, np.float32)))]
        got = run_exported(exported, image)
        counts.append((len(ref[2]), len(got[2])))
        if len(ref[2]) != len(got[2]):
            continue
        labels_equal &= bool(np.array_equal(ref[1], got[1]))
        if len(ref[2]):
            box = max(box, float(np.abs(ref[0] - got[0]).max()))
            score = max(score, float(np.abs(ref[2] - got[2]).max()))
            mask = max(mask, float(np.abs(ref[3] - got[3]).max()))
    return Parity(counts, labels_equal, box, score, mask)
