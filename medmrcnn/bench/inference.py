"""Benchmark 1: slice-wise inference throughput and peak memory, medmrcnn vs the plain torchvision loop.

Variants, each in its own process, same weights, same volume, same thresholds:
    medmrcnn              SliceWisePredictor: the whole predict (batches at the network's pixel size, compact masks,
                          3D linking, label maps, measurements)
    torchvision_default   model([slice]) one slice at a time behind torchvision's default transform (800 px)
    torchvision_native    the same loop on slices resampled to the network's pixel size as medmrcnn resamples them
                          (torchvision's transform then keeps that size)
medmrcnn's per-slice instances are compared with each baseline's (`agreement`, after the same duplicate removal
medmrcnn applies); a speed-up counts only where they agree. torchvision_native isolates what medmrcnn's
engineering gains at equal resolution.
"""

from __future__ import annotations

from typing import Any

from medmrcnn.bench.agreement import compare_detections
from medmrcnn.bench.baselines import load_torchvision_model, torchvision_inference_loop
from medmrcnn.bench.compare import interleaved, median_ratio, memory_ratio, speedup, summarise
from medmrcnn.bench.fixtures import load_npz
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings
from medmrcnn.inference import PredictorConfig, SliceWisePredictor
from medmrcnn.inference.postprocess import remove_duplicates
from medmrcnn.transforms import inplane_size
from medmrcnn.volume import Volume

OURS = "medmrcnn"
BASELINES = ("torchvision_default", "torchvision_native")


WARMUP_SLICES = 4  # one CPU batch of the predictor: kernels are chosen per input shape on their first call


def _warmup_volume(volume: Volume) -> Volume:
    return Volume(volume.array[:WARMUP_SLICES], volume.affine, modality=volume.modality)


def run_medmrcnn(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: SliceWisePredictor on the volume (per-slice instances + 3D assembly, i.e. `predict`)."""
    predictor = SliceWisePredictor.from_checkpoint(spec["weights"], cfg=PredictorConfig(), device=spec["device"])
    volume = load_npz(spec["volume"])
    if spec["warmup"]:
        predictor.predict(_warmup_volume(volume))
    with probe.section():
        # predict() = predict_slices() + assemble(); called apart to keep the per-slice instances for comparison.
        slices, info = predictor.predict_slices(volume)
        result = predictor.assemble(volume, slices)
    return {"detections": slices, "instances_3d": result.num_instances, "batch_size": info["batch_size"],
            "network_size_yx": info["network_size_yx"], "amp": info["amp"]}


def run_torchvision(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: the plain torchvision loop (default 800-px transform, or fixed to the network's pixel size)."""
    volume = load_npz(spec["volume"])
    size = None
    if spec["native"]:
        from medmrcnn.modeling import read_checkpoint

        mcfg = read_checkpoint(spec["weights"]).config
        _, sy, sx = volume.spacing
        size = inplane_size(volume.shape[1:], (sy, sx), mcfg.pixel_spacing_mm)
    model, mcfg = load_torchvision_model(spec["weights"], size, spec["device"])
    if spec["warmup"]:
        torchvision_inference_loop(model, mcfg, _warmup_volume(volume), spec["device"], size)
    with probe.section():
        slices = torchvision_inference_loop(model, mcfg, volume, spec["device"], size)
    return {"detections": slices, "network_size_yx": list(size) if size else "800-px short side"}


def bench_inference(runner: IsolatedRunner, settings: BenchSettings, fixtures: dict[str, Any], which: str
                    ) -> dict[str, Any]:
    """Run the three variants on fixture `which` ("r50" or "demo"); figures, ratios and agreement."""
    volume_path, weights = fixtures[f"{which}_volume"], fixtures[f"{which}_weights"]
    n, h, w = load_npz(volume_path).shape
    base = {"volume": volume_path, "weights": weights, "device": settings.device, "warmup": settings.warmup}
    variants = {
        OURS: (run_medmrcnn, base),
        "torchvision_default": (run_torchvision, {**base, "native": False}),
        "torchvision_native": (run_torchvision, {**base, "native": True}),
    }
    samples = interleaved(runner, variants, settings.repeats)
    figures = {name: summarise(s, n, "slices") for name, s in samples.items()}
    ours_dets = samples[OURS][0]["detections"]
    figures[OURS].update({k: samples[OURS][0][k] for k in ("instances_3d", "batch_size", "network_size_yx", "amp")})
    figures[OURS]["detections_per_slice"] = round(sum(len(s) for s in ours_dets) / n, 2)
    out: dict[str, Any] = {"slices": n, "matrix": [h, w],
                           "weights": fixtures[f"{which}_weights_kind"], "variants": figures, "ratios": {},
                           "agreement": {}}
    overlap = PredictorConfig().duplicate_overlap
    for name in BASELINES:
        figures[name]["network_size_yx"] = samples[name][0]["network_size_yx"]
        figures[name]["detections_per_slice"] = round(sum(len(s) for s in samples[name][0]["detections"]) / n, 2)
        # medmrcnn drops part-object duplicates by design (PredictorConfig.duplicate_overlap); the baseline's
        # instances go through the same rule, so the comparison checks that medmrcnn reproduces the network.
        reference = [remove_duplicates(s, overlap) for s in samples[name][0]["detections"]]
        agreement = compare_detections(ours_dets, reference, compare_masks=fixtures[f"{which}_trained"])
        agreement["reference_postprocessing"] = f"remove_duplicates(overlap={overlap})"
        out["agreement"][name] = agreement
        out["ratios"][name] = {
            "speedup": speedup(samples[name], samples[OURS]),
            "median_ratio": median_ratio(samples[name], samples[OURS]),
            "cpu_time_speedup": speedup(samples[name], samples[OURS], "cpu_seconds"),
            "host_peak_increase": memory_ratio(figures[name], figures[OURS], "host_peak_increase_mb"),
            "cuda_peak": memory_ratio(figures[name], figures[OURS], "cuda_peak_mb"),
            "counts": agreement["agrees"],
        }
    return out
