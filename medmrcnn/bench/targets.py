"""The issue's speed targets, checked against a run's results: reached, missed, or not verifiable here (and why)."""

from __future__ import annotations

from typing import Any

from medmrcnn.bench.settings import BenchSettings

# The DICOM-SEG target is stated for this case on two CPU cores.
SEG_TARGET_SHAPE = [300, 512, 512]
SEG_TARGET_S = 3.0
REFINEMENT_MAX_RATIO = 1.3


def _target(name: str, value: float | None, threshold: float, higher_is_better: bool, applies: bool = True,
            note: str = "") -> dict[str, Any]:
    reached = None
    if value is not None and applies:
        reached = value >= threshold if higher_is_better else value <= threshold
    return {"target": name, "value": value, "threshold": threshold, "reached": reached, "note": note}


def _inference_speedup(results: dict[str, Any], key: str) -> tuple[float | None, bool, str]:
    r = results.get(key, {}).get("ratios", {}).get("torchvision_default")
    if not r:
        return None, False, "not measured"
    agreement = results[key]["agreement"]["torchvision_default"]
    if r["counts"]:
        return r["speedup"], True, "outputs agree with the baseline"
    by = "scores" if agreement["rule"].startswith("untrained") else "masks"
    return r["speedup"], False, (f"does not count: outputs differ from the 800-px pipeline ({by} F1 "
                                 f"{agreement[by]['f1']}, {agreement['reference_instances']} reference instances)")


def evaluate_targets(results: dict[str, Any], settings: BenchSettings) -> list[dict[str, Any]]:
    """One entry per target that applies to this device: value, threshold, reached (None: not verifiable), note."""
    out = []
    device = "GPU" if settings.cuda else "CPU"
    need = 2.0 if settings.cuda else 1.5
    for key, model in (("inference_r50", "R50-FPN"), ("inference_demo", "demo model")):
        value, counts, note = _inference_speedup(results, key)
        out.append(_target(f"{device} inference >= {need}x the torchvision default pipeline ({model})", value, need,
                           True, counts, note))
    load = results.get("dicom_load", {})
    identical = load.get("identical_voxels")
    out.append(_target("DICOM load no slower than SimpleITK (speed-up >= 1)",
                       load.get("ratios", {}).get("simpleitk", {}).get("speedup"), 1.0, True, bool(identical),
                       "identical voxels" if identical else "voxels differ from SimpleITK's or not measured"))
    seg = results.get("seg_export", {})
    seconds = seg.get("variants", {}).get("medmrcnn", {}).get("median_s")
    full_case = seg.get("series") == SEG_TARGET_SHAPE and settings.threads == 2 and not settings.cuda
    out.append(_target(f"DICOM-SEG export of 512x512x300, 5 segments < {SEG_TARGET_S} s on 2 CPU cores", seconds,
                       SEG_TARGET_S, False, full_case,
                       "" if full_case else f"measured on {seg.get('series')} with {settings.threads} threads: "
                                            "not the target case"))
    refine = results.get("mask_refinement", {})
    same = bool(refine.get("agreement", {}).get("agrees"))
    out.append(_target(f"{device} inference with point-refined masks <= {REFINEMENT_MAX_RATIO}x the plain mask head",
                       refine.get("ratios", {}).get("time_ratio"), REFINEMENT_MAX_RATIO, False, same,
                       "same detections" if same else "detections differ or not measured"))
    prompts = results.get("prompts", {})
    if "variants" in prompts:
        two_cpu = settings.threads == 2 and not settings.cuda and prompts["matrix"] == [512, 512]
        m = prompts["matrix"][0]
        for suffix, seen in (("", f"{m} x {m}, 0.7 mm at 512: network at half size"),
                             ("_net512", f"{m} x {m}, 1.4 mm at 512: network at full size")):
            out.append(_target(f"Next prompt >= 10x faster than the first (demo model, {seen})",
                               prompts[f"next_vs_first_speedup{suffix}"], 10.0, True, True,
                               f"CPU-time ratio {prompts[f'next_vs_first_cpu_speedup{suffix}']}x"))
            out.append(_target(f"Next prompt < 0.3 s on 2 CPU cores ({seen})",
                               prompts["variants"][f"next_prompt{suffix}"]["median_s"], 0.3, False, two_cpu,
                               "" if two_cpu else "not the target case (2 CPU threads, 512 x 512)"))
    if settings.cuda:
        r50 = results.get("inference_r50", {}).get("variants", {}).get("medmrcnn", {})
        matrix = results.get("inference_r50", {}).get("matrix")
        out.append(_target("GPU inference >= 300 slices/s at 512x512 (R50-FPN)", r50.get("slices_per_s"), 300.0,
                           True, matrix == [512, 512]))
        train = results.get("training", {}).get("ratios", {}).get("torchvision_default", {})
        out.append(_target("GPU training >= 1.5x the plain torchvision loop", train.get("speedup"), 1.5, True))
        e2e = results.get("end_to_end", {})
        out.append(_target("End to end 300-slice CT < 5 s on the GPU",
                           e2e.get("variants", {}).get("medmrcnn", {}).get("median_s"), 5.0, False,
                           (e2e.get("series") or [0])[0] == 300))
    return out
