"""Benchmark 5: how far from the hardware limit inference runs.

Achieved model TFLOP/s = FLOPs of one slice (counted once with `torch.utils.flop_counter.FlopCounterMode`: the
convolutions and matrix products of the whole Mask R-CNN forward at the network's input size) x slices/s measured
in benchmark 1, as a fraction of the device's *measured* dense matrix-multiply peak: float16 (what the predictor's
autocast uses) and bfloat16 on CUDA, float32 on the CPU. The counter skips RoIAlign, NMS and element-wise work,
so the fraction is a lower bound of the arithmetic the device did.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from medmrcnn.bench.fixtures import load_npz
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings

CUDA_MATMUL_N, CPU_MATMUL_N = 8192, 2048


def matmul_peak_tflops(device: str, dtype: torch.dtype, n: int, iters: int) -> float:
    """Measured dense n x n x n matmul throughput in TFLOP/s (CUDA events on a GPU, wall time on the CPU)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(iters):
            torch.mm(a, b, out=c)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b, out=c)
        seconds = time.perf_counter() - t0
    return 2.0 * n**3 * iters / seconds / 1e12


def count_slice_flops(weights: str, volume_path: str, device: str) -> tuple[float, list[int]]:
    """FLOPs of one forward pass on the volume's central slice at the network's input size, and that size."""
    from torch.utils.flop_counter import FlopCounterMode

    from medmrcnn.inference.detector import run_detector
    from medmrcnn.modeling import load_model
    from medmrcnn.transforms import inplane_size, normalise_volume, resize_slices, slice_with_context

    model, cfg = load_model(weights, device=device)
    volume = load_npz(volume_path)
    image = normalise_volume(volume, cfg.intensity)
    _, sy, sx = volume.spacing
    size = inplane_size(volume.shape[1:], (sy, sx), cfg.pixel_spacing_mm)
    x = torch.from_numpy(slice_with_context(image, volume.shape[0] // 2, cfg.context_slices))[None].to(device)
    x = resize_slices(x, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        run_detector(model, x)
    return float(counter.get_total_flops()), list(size)


def run_flops(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: FLOPs per slice of each model, then the matmul peaks (the timed section)."""
    device = spec["device"]
    counted = {name: count_slice_flops(w, v, device) for name, (w, v) in spec["models"].items()}
    with probe.section():
        if device.startswith("cuda"):
            peaks = {str(dt).removeprefix("torch."): matmul_peak_tflops(device, dt, CUDA_MATMUL_N, 50)
                     for dt in (torch.float16, torch.bfloat16)}
        else:
            peaks = {"float32": matmul_peak_tflops(device, torch.float32, CPU_MATMUL_N, 5)}
    return {"flops_per_slice": {k: v[0] for k, v in counted.items()},
            "network_size_yx": {k: v[1] for k, v in counted.items()}, "peak_tflops": peaks}


def bench_flops(runner: IsolatedRunner, settings: BenchSettings, fixtures: dict[str, Any],
                inference: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Achieved TFLOP/s of medmrcnn's inference (from the `inference` results) against the measured peak."""
    models = {name: (fixtures[f"{name}_weights"], fixtures[f"{name}_volume"]) for name in ("r50", "demo")}
    sample = runner.run(run_flops, {"device": settings.device, "models": models})
    peak_dtype = "float16" if settings.cuda else "float32"
    peak = sample["peak_tflops"][peak_dtype]
    out: dict[str, Any] = {"peak_tflops": {k: round(v, 3) for k, v in sample["peak_tflops"].items()},
                           "peak_dtype": peak_dtype, "models": {}}
    for name, flops in sample["flops_per_slice"].items():
        entry: dict[str, Any] = {"gflops_per_slice": round(flops / 1e9, 2),
                                 "network_size_yx": sample["network_size_yx"][name]}
        result = inference.get(f"inference_{name}", {})
        rate = result.get("variants", {}).get("medmrcnn", {}).get("slices_per_s")
        if rate:
            achieved = flops * rate / 1e12
            entry.update(achieved_tflops=round(achieved, 4), fraction_of_peak=round(achieved / peak, 4))
        out["models"][name] = entry
    return out
