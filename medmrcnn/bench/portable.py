"""Benchmark: the demo model per slice in PyTorch (what medmrcnn runs) beside its TorchScript and ONNX Runtime exports.

Variants, each in its own process, on the same preprocessed slices (the demo volume normalised with the model's
preset and resampled to its pixel spacing, as the predictor feeds the network), one slice per call:
    medmrcnn       the checkpoint's torchvision Mask R-CNN in eager PyTorch (`SliceDetector`)
    torchscript    `medmrcnn export-model`'s model.pt (torch.jit.load)
    onnxruntime    `medmrcnn export-model`'s model.onnx on onnxruntime's CPU provider (CUDA provider on CUDA runs)
The exported files' detections are compared with PyTorch's on the same slices (`parity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmrcnn.bench.compare import interleaved, median_ratio, speedup, summarise
from medmrcnn.bench.fixtures import load_npz
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings

OURS = "medmrcnn"
EXPORTED = {"torchscript": "model.pt", "onnxruntime": "model.onnx"}
# TorchScript's profiling executor optimises the graph over its first calls; every variant gets the same warm-up.
WARMUP_CALLS = 3


def network_slices(volume_path: str, weights: str) -> np.ndarray:
    """(z, C, h, w) float32: every slice as the predictor feeds the network (preset, context, pixel spacing)."""
    from medmrcnn.modeling.checkpoint import read_checkpoint
    from medmrcnn.transforms import (
        inplane_size, normalise_volume, resize_slices, resolve_intensity, slice_with_context,
    )

    volume = load_npz(volume_path)
    cfg = read_checkpoint(weights).config
    image = normalise_volume(volume, resolve_intensity(cfg.intensity, volume.modality))
    stack = torch.from_numpy(np.stack([slice_with_context(image, z, cfg.context_slices)
                                       for z in range(image.shape[0])]))
    _, sy, sx = volume.spacing
    size = inplane_size(image.shape[1:], (sy, sx), cfg.pixel_spacing_mm) if cfg.pixel_spacing_mm else image.shape[1:]
    return resize_slices(stack, tuple(size)).numpy()


def export_task(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: `export_model` of the weights into the work folder (timed: the export cost itself)."""
    from medmrcnn.deploy.portable import export_model

    with probe.section():
        written = export_model(spec["weights"], spec["output"])
    return {"files": {k: str(v) for k, v in written.items()}}


def run_variant(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: one slice per call through one variant; the detections' counts and scores for parity."""
    slices = np.load(spec["slices"])
    device = spec["device"]
    if spec["variant"] == "onnxruntime":
        import onnxruntime as ort

        providers = (["CUDAExecutionProvider"] if device.startswith("cuda") else []) + ["CPUExecutionProvider"]
        session = ort.InferenceSession(spec["file"], providers=providers)

        def run(x: np.ndarray) -> list[np.ndarray]:
            return session.run(None, {"image": x})
    else:
        if spec["variant"] == "torchscript":
            from medmrcnn.deploy.portable import load_torchscript

            module = load_torchscript(spec["file"], device)
        else:
            from medmrcnn.deploy.portable import SliceDetector
            from medmrcnn.modeling.checkpoint import load_model

            module = SliceDetector(load_model(spec["weights"], device=device)[0])

        def run(x: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                return [t.cpu().numpy() for t in module(torch.from_numpy(x).to(device))]
    if spec["warmup"]:
        for _ in range(WARMUP_CALLS):
            run(slices[0])
    outputs = []
    with probe.section():
        for x in slices:
            outputs.append(run(x))
    return {"counts": [len(o[2]) for o in outputs], "scores": [o[2].tolist() for o in outputs]}


def bench_portable(runner: IsolatedRunner, settings: BenchSettings, fixtures: dict[str, Any], work: str
                   ) -> dict[str, Any]:
    """PyTorch vs TorchScript vs ONNX Runtime on the demo volume's slices; figures, ratios and parity."""
    weights = fixtures["demo_weights"]
    out_dir = Path(work) / "portable"
    export = runner.run(export_task, {"weights": weights, "output": str(out_dir)})
    slices = network_slices(fixtures["demo_volume"], weights)
    slices_path = out_dir / "slices.npy"
    np.save(slices_path, slices)
    base = {"slices": str(slices_path), "weights": weights, "device": settings.device, "warmup": settings.warmup}
    variants = {OURS: (run_variant, {**base, "variant": OURS})}
    for name, file in EXPORTED.items():
        variants[name] = (run_variant, {**base, "variant": name, "file": str(out_dir / file)})
    samples = interleaved(runner, variants, settings.repeats)
    n = len(slices)
    figures = {name: summarise(s, n, "slices") for name, s in samples.items()}
    reference = samples[OURS][0]
    out: dict[str, Any] = {"slices": n, "network_matrix": list(slices.shape[2:]),
                           "export_s": round(export["seconds"], 2),
                           "variants": figures, "ratios": {}, "parity": {}}
    for name in EXPORTED:
        got = samples[name][0]
        same = got["counts"] == reference["counts"]
        diff = max((float(np.max(np.abs(np.subtract(a, b)))) for a, b in zip(got["scores"], reference["scores"])
                    if len(a)), default=0.0) if same else None
        out["parity"][name] = {"same_detections": same, "max_score_diff": diff}
        # Here the ratio is the export's speed relative to medmrcnn's PyTorch: > 1 means PyTorch is faster.
        out["ratios"][name] = {"speedup": speedup(samples[name], samples[OURS]),
                               "median_ratio": median_ratio(samples[name], samples[OURS])}
    return out
