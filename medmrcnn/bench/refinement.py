"""Benchmark: time and memory of PointRend-style mask refinement per slice, against the plain 28 x 28 mask head.

Both variants are the demo model's weights (or --demo-weights) on the same volume with the same PredictorConfig;
the refined one adds a point head with seeded random weights (what it costs does not depend on what it learned,
only on how many boxes it refines and how large they are). Everything but the masks is the same network, so the
detections (class and score) must agree; the ratio of the medians is the refinement's cost.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from medmrcnn.bench.agreement import compare_detections
from medmrcnn.bench.compare import interleaved, median_ratio, memory_ratio, speedup, summarise
from medmrcnn.bench.fixtures import load_npz
from medmrcnn.bench.inference import run_medmrcnn
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings

POINT_HEAD_SEED = 18


def make_refined_checkpoint(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: spec["weights"] with mask_refinement="pointrend" and a seeded point head, saved to spec["out"]."""
    import torch

    from medmrcnn.modeling import build_model, read_checkpoint, save_checkpoint

    with probe.section():
        ckpt = read_checkpoint(spec["weights"])
        cfg = replace(ckpt.config, mask_refinement="pointrend")
        torch.manual_seed(POINT_HEAD_SEED)
        model = build_model(cfg)
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
        if unexpected or not all(k.startswith("roi_heads.point_head.") for k in missing):
            raise ValueError(f"{spec['weights']}: weights do not fit the refined model ({missing[:3]}, {unexpected[:3]})")
        save_checkpoint(spec["out"], model.eval(), cfg, extra={"point_head": f"random, seed {POINT_HEAD_SEED}"})
    return {"path": spec["out"]}


def bench_mask_refinement(runner: IsolatedRunner, settings: BenchSettings, fixtures: dict[str, Any], workdir: str
                          ) -> dict[str, Any]:
    """Plain vs point-refined masks on the demo fixture: per-slice time, memory, their ratio, agreement."""
    volume_path, weights = fixtures["demo_volume"], fixtures["demo_weights"]
    refined = runner.run(make_refined_checkpoint,
                         {"weights": weights, "out": str(Path(workdir) / "demo_pointrend.safetensors")})["path"]
    n, h, w = load_npz(volume_path).shape
    base = {"volume": volume_path, "device": settings.device, "warmup": settings.warmup}
    variants = {"plain": (run_medmrcnn, {**base, "weights": weights}),
                "pointrend": (run_medmrcnn, {**base, "weights": refined})}
    samples = interleaved(runner, variants, settings.repeats)
    figures = {name: summarise(s, n, "slices") for name, s in samples.items()}
    for name in figures:
        dets = samples[name][0]["detections"]
        figures[name]["detections_per_slice"] = round(sum(len(s) for s in dets) / n, 2)
        figures[name]["ms_per_slice"] = round(1000 * figures[name]["median_s"] / n, 1)
    agreement = compare_detections(samples["pointrend"][0]["detections"], samples["plain"][0]["detections"],
                                   compare_masks=False)
    return {
        "slices": n, "matrix": [h, w], "weights": fixtures["demo_weights_kind"],
        "point_head": f"random, seed {POINT_HEAD_SEED}", "variants": figures,
        "ratios": {
            "time_ratio": median_ratio(samples["pointrend"], samples["plain"]),
            "paired_time_ratio": round(1 / speedup(samples["plain"], samples["pointrend"]), 3),
            "cpu_time_ratio": round(1 / speedup(samples["plain"], samples["pointrend"], "cpu_seconds"), 3),
            "host_peak_increase": memory_ratio(figures["plain"], figures["pointrend"], "host_peak_increase_mb"),
            "cuda_peak": memory_ratio(figures["plain"], figures["pointrend"], "cuda_peak_mb"),
        },
        "agreement": agreement,
    }
