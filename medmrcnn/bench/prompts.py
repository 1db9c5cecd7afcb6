"""Benchmark: prompted segmentation latency (`medmrcnn.inference.prompts`) with the demo model.

Variants, each in its own process (model loaded and its kernels warmed on another image first):
    first_prompt        a click on a new 512 x 512 CT slice of 0.7 mm pixels (the network sees it at its 1.4 mm,
                        256 x 256): normalisation, backbone, RPN and heads
    next_prompt         a second click on the same image: the heads only (features and proposals from the cache)
    first_prompt_net512, next_prompt_net512
                        the same on a 512 x 512 slice of 1.4 mm pixels, which the network sees at 512 x 512
    propagation_cold    a click on the liver of a 64 x 512 x 512 phantom (0.7 mm, 2.5 mm slices; about 40 slices),
                        followed through all its slices (backbone per slice)
    propagation_warm    the same prompt again: the heads only on every slice
The ratio first / next is the saving of the feature cache (target: >= 10x, next < 0.3 s on two CPU cores).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from medmrcnn.bench.compare import interleaved, summarise
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings
from medmrcnn.volume import Volume

VARIANTS = ("first_prompt", "next_prompt", "first_prompt_net512", "next_prompt_net512", "propagation_cold",
            "propagation_warm")
ONE_SLICE = VARIANTS[:4]
PROPAGATION_SLICES = 40


def _phantom(matrix: int, slices: int, seed: int, pixel_mm: float = 0.7) -> tuple[Volume, np.ndarray]:
    """A CT phantom of `slices` x matrix x matrix (`pixel_mm` pixels at 512, 2.5 mm slices) and its liver mask."""
    from medmrcnn.synthetic import make_ct_phantom

    px = pixel_mm * 512 / matrix
    ph = make_ct_phantom(shape=(slices, matrix, matrix), spacing=(2.5, px, px),
                         n_tumours=2, tumour_diameter_mm=(20.0, 30.0), seed=seed)
    liver = next(i for i, c in ph.gt_classes.items() if ph.labels.name_of(c) == "liver")
    return ph.volume, ph.gt_instances == liver


def _inside(mask: np.ndarray, k: int) -> tuple[int, int, int]:
    """The k-th voxel (in a fixed order) of the mask's central slice, eroded so the click is well inside."""
    z = int(np.flatnonzero(mask.any(axis=(1, 2))).mean())
    core = ndimage.binary_erosion(mask[z], iterations=8)
    ys, xs = np.nonzero(core if core.any() else mask[z])
    i = (len(ys) // 3) * (k + 1) % len(ys)
    return z, int(ys[i]), int(xs[i])


def run_prompt(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: one variant of VARIANTS (see module docstring)."""
    from medmrcnn.inference.prompts import Prompt, PromptSegmenter
    from medmrcnn.modeling import load_model

    model, cfg = load_model(spec["weights"], device=spec["device"])
    segmenter = PromptSegmenter(model, cfg)
    one_slice = spec["variant"] in ONE_SLICE
    pixel_mm = 1.4 if spec["variant"].endswith("net512") else 0.7
    warm_volume, warm_liver = _phantom(spec["matrix"], 1 if one_slice else 3, seed=1, pixel_mm=pixel_mm)
    segmenter.segment(warm_volume, Prompt(foreground=(_inside(warm_liver, 0),)), "warm-up")
    if one_slice:  # one 512 x 512 slice
        volume, liver = _phantom(spec["matrix"], 8, seed=2, pixel_mm=pixel_mm)
        z = _inside(liver, 0)[0]
        volume, liver = Volume(volume.array[z:z + 1].copy(), volume.affine, modality="CT"), liver[z:z + 1]
    else:
        volume, liver = _phantom(spec["matrix"], spec["slices"], seed=2)
    first = Prompt(foreground=(_inside(liver, 0),))
    second = Prompt(foreground=(_inside(liver, 1),)) if spec["variant"].startswith("next") else first
    if spec["variant"].startswith("next") or spec["variant"] == "propagation_warm":
        segmenter.segment(volume, first, "image")
    with probe.section():
        result = segmenter.segment(volume, second, "image")
    covered = len(result.slice_scores)
    return {"slices_covered": covered, "liver_slices": int(liver.any(axis=(1, 2)).sum()),
            "dice": round(float(2 * (result.mask & liver).sum() / (result.mask.sum() + liver.sum())), 3),
            "cache": result.metadata["cache"]}


def bench_prompts(runner: IsolatedRunner, settings: BenchSettings, weights: str) -> dict[str, Any]:
    """First vs next prompt on one slice, and propagation through >= 40 slices, cold and warm."""
    matrix = 256 if settings.quick and not settings.cuda else settings.matrix
    slices = 8 if settings.quick and not settings.cuda else 64  # the liver spans ~2/3 of the phantom's slices
    base = {"weights": weights, "device": settings.device, "matrix": matrix, "slices": slices}
    samples = interleaved(runner, {v: (run_prompt, {**base, "variant": v}) for v in VARIANTS}, settings.repeats)
    out: dict[str, Any] = {"matrix": [matrix, matrix], "volume_slices": slices, "variants": {}}
    for v in VARIANTS:
        s = samples[v]
        covered = s[0]["slices_covered"]
        fig = summarise(s, covered, "slices")
        fig.update(slices_covered=covered, liver_slices=s[0]["liver_slices"], dice=s[0]["dice"],
                   cache=s[0]["cache"])
        out["variants"][v] = fig
    for suffix in ("", "_net512"):
        first, nxt = out["variants"][f"first_prompt{suffix}"], out["variants"][f"next_prompt{suffix}"]
        out[f"next_vs_first_speedup{suffix}"] = round(first["median_s"] / nxt["median_s"], 1)
        out[f"next_vs_first_cpu_speedup{suffix}"] = round(first["cpu_median_s"] / nxt["cpu_median_s"], 1)
    cold, warm = out["variants"]["propagation_cold"], out["variants"]["propagation_warm"]
    out["propagation_per_slice_s"] = {"cold": round(cold["median_s"] / cold["slices_covered"], 4),
                                      "warm": round(warm["median_s"] / warm["slices_covered"], 4)}
    return out
